"""Send the pipeline definition to SageMaker: create or update it, optionally start it.

The JSON sent is exactly what ``build_definition`` returns, the same document the local
runner executes for the same configuration.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.definition import build_definition, make_session
from pipelines.local_runner import DefinitionError, bind_parameters
from pipelines.remote import sagemaker_client as sagemaker_client_for
from pipelines.remote import start_execution
from stack.config import Config, ConfigError


@dataclass(frozen=True)
class UpsertResult:
    action: str  # "Created" or "Updated"
    pipeline_arn: str
    definition: str
    execution_arn: str | None = None


def upsert_pipeline(
    config: Config,
    description: str | None = None,
    start: bool = False,
    parameters: Mapping[str, str] | None = None,
    sagemaker_client: Any | None = None,
    tags: Mapping[str, str] | None = None,
    display_name: str | None = None,
) -> UpsertResult:
    """CreatePipeline, or UpdatePipeline if it exists; then StartPipelineExecution if
    asked.

    ``tags`` go on the pipeline (with ``environment``) when it is created, and are
    added to it when it is updated. The definition is checked against SageMaker's API
    model and the parameters against the definition before anything is sent.
    """
    require_role(config)
    definition = build_definition(config, make_session(config))
    try:
        bind_parameters(definition, parameters or {})  # fail before touching AWS
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from None
    body = json.dumps(definition)
    client = sagemaker_client or sagemaker_client_for(config)
    name = config.sagemaker.pipeline_name
    all_tags = [
        {"Key": k, "Value": v}
        for k, v in {"environment": config.env, **(tags or {})}.items()
    ]
    request: dict[str, Any] = {
        "PipelineName": name,
        "PipelineDefinition": body,
        "RoleArn": config.aws.role_arn,
        "PipelineDescription": description or f"churn pipeline ({config.env})",
    }
    if display_name:
        request["PipelineDisplayName"] = display_name
    if _exists(client, name):
        arn = client.update_pipeline(**request)["PipelineArn"]
        client.add_tags(ResourceArn=arn, Tags=all_tags)
        action = "Updated"
    else:
        request["ClientRequestToken"] = uuid.uuid4().hex
        request["Tags"] = all_tags
        arn = client.create_pipeline(**request)["PipelineArn"]
        action = "Created"
    execution_arn = (
        start_execution(client, name, parameters or {}, display_name) if start else None
    )
    return UpsertResult(action, arn, body, execution_arn)


def require_role(config: Config) -> str:
    """The pipeline's execution role, or ConfigError saying how to give one."""
    if not config.aws.role_arn:
        raise ConfigError(
            "aws.role_arn is not set (pass --role-arn or set MLOPS_AWS__ROLE_ARN)"
        )
    return config.aws.role_arn


def _exists(client: Any, name: str) -> bool:
    try:
        client.describe_pipeline(PipelineName=name)
    except client.exceptions.ResourceNotFound:
        return False
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in (
            "ResourceNotFound",
            "ValidationException",
        ):
            return False
        raise
    return True
