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
) -> UpsertResult:
    """CreatePipeline, or UpdatePipeline if it exists; then StartPipelineExecution if
    asked.
    """
    if not config.aws.role_arn:
        raise ConfigError(
            "aws.role_arn is not set (pass --role-arn or set MLOPS_AWS__ROLE_ARN)"
        )
    definition = build_definition(config, make_session(config))
    try:
        bind_parameters(definition, parameters or {})  # fail before touching AWS
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from None
    body = json.dumps(definition)
    client = sagemaker_client or _client(config)
    name = config.sagemaker.pipeline_name
    request: dict[str, Any] = {
        "PipelineName": name,
        "PipelineDefinition": body,
        "RoleArn": config.aws.role_arn,
        "PipelineDescription": description or f"churn pipeline ({config.env})",
    }
    if _exists(client, name):
        arn = client.update_pipeline(**request)["PipelineArn"]
        action = "Updated"
    else:
        request["ClientRequestToken"] = uuid.uuid4().hex
        request["Tags"] = [{"Key": "environment", "Value": config.env}]
        arn = client.create_pipeline(**request)["PipelineArn"]
        action = "Created"
    execution_arn = None
    if start:
        started = client.start_pipeline_execution(
            PipelineName=name,
            PipelineParameters=[
                {"Name": k, "Value": str(v)} for k, v in (parameters or {}).items()
            ],
            ClientRequestToken=uuid.uuid4().hex,
        )
        execution_arn = started["PipelineExecutionArn"]
    return UpsertResult(action, arn, body, execution_arn)


def _client(config: Config) -> Any:
    import boto3
    from botocore.exceptions import NoCredentialsError

    session = boto3.Session(region_name=config.aws.region)
    if session.get_credentials() is None:
        raise ConfigError(
            "no AWS credentials found (set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,"
            " or run where an IAM role is attached)"
        ) from NoCredentialsError()
    return session.client("sagemaker", endpoint_url=config.aws.endpoint_url)


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
