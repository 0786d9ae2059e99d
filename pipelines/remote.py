"""Pipelines on SageMaker: ``SageMakerPipelines``, the ``PipelineService`` over the
SageMaker API (a boto3 client from the environment's resources).

Its records are shaped like the local runner's (``pipelines.service``), so every
command shows both the same way. moto answers most of these calls in tests.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pipelines.service import (
    ExecutionList,
    ExecutionStatus,
    PipelineNotFound,
    PipelineRefused,
    PipelineService,
    PipelineServiceError,
    Progress,
    StepStatus,
    Upserted,
    seconds_between,
)
from stack.config import ConfigError

NO_CREDENTIALS = (
    "no AWS credentials found (set AWS_PROFILE or "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an IAM role is attached)"
)


class SageMakerPipelines(PipelineService):
    """CreatePipeline/UpdatePipeline, StartPipelineExecution, Describe/List and
    RetryPipelineExecution. ``pipeline_name``: the pipeline ``list`` shows by default.
    ``credentials_found``: whether the session has credentials (``check_access``).
    """

    runs_here = False
    platform = "SageMaker"

    def __init__(
        self,
        client: Any,
        pipeline_name: str,
        credentials_found: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        self.pipeline_name = pipeline_name
        self.where = f"SageMaker pipeline {pipeline_name}"
        self._credentials_found = credentials_found

    def check_access(self) -> None:
        if self._credentials_found is not None and not self._credentials_found():
            raise ConfigError(NO_CREDENTIALS)

    def upsert(
        self,
        definition: dict[str, Any],
        *,
        name: str,
        role_arn: str,
        description: str,
        tags: Mapping[str, str] | None = None,
        display_name: str | None = None,
    ) -> Upserted:
        request: dict[str, Any] = {
            "PipelineName": name,
            "PipelineDefinition": json.dumps(definition),
            "RoleArn": role_arn,
            "PipelineDescription": description,
        }
        if display_name:
            request["PipelineDisplayName"] = display_name
        tagged = [{"Key": k, "Value": v} for k, v in (tags or {}).items()]
        if self._exists(name):
            with _calling("UpdatePipeline", name):
                arn = str(self.client.update_pipeline(**request)["PipelineArn"])
                if tagged:
                    self.client.add_tags(ResourceArn=arn, Tags=tagged)
            return Upserted("Updated", arn)
        request["ClientRequestToken"] = uuid.uuid4().hex
        if tagged:
            request["Tags"] = tagged
        with _calling("CreatePipeline", name):
            return Upserted(
                "Created", str(self.client.create_pipeline(**request)["PipelineArn"])
            )

    def _exists(self, name: str) -> bool:
        try:
            self.client.describe_pipeline(PipelineName=name)
        except self.client.exceptions.ClientError as exc:
            if _code(exc) in ("ResourceNotFound", "ValidationException"):
                return False
            raise
        return True

    def start(
        self,
        name: str,
        parameters: Mapping[str, Any],
        *,
        display_name: str | None = None,
        description: str | None = None,
        token: str | None = None,
        progress: Progress | None = None,
    ) -> str:
        request: dict[str, Any] = {
            "PipelineName": name,
            "PipelineParameters": [
                {"Name": k, "Value": str(v)} for k, v in parameters.items()
            ],
            "ClientRequestToken": token or uuid.uuid4().hex,
        }
        if display_name:
            request["PipelineExecutionDisplayName"] = display_name
        if description:
            request["PipelineExecutionDescription"] = description[:3072]
        with _calling("StartPipelineExecution", name):
            response = self.client.start_pipeline_execution(**request)
        return str(response["PipelineExecutionArn"])

    def describe(self, execution: str) -> ExecutionStatus:
        with _calling("DescribePipelineExecution", execution):
            described = self.client.describe_pipeline_execution(
                PipelineExecutionArn=execution
            )
            steps = list(self._steps(execution))
        return ExecutionStatus(
            execution_id=execution,
            status=described["PipelineExecutionStatus"],
            started_at=_text(described.get("CreationTime")),
            failure_reason=described.get("FailureReason"),
            steps=steps,
            display_name=described.get("PipelineExecutionDisplayName"),
        )

    def _steps(self, execution: str) -> Iterator[StepStatus]:
        paginator = self.client.get_paginator("list_pipeline_execution_steps")
        pages = paginator.paginate(
            PipelineExecutionArn=execution, SortOrder="Ascending"
        )
        for page in pages:
            for step in page.get("PipelineExecutionSteps", []):
                cache = step.get("CacheHitResult") or {}
                started, ended = (
                    _text(step.get("StartTime")),
                    _text(step.get("EndTime")),
                )
                yield StepStatus(
                    name=step["StepName"],
                    status=step.get("StepStatus", "Unknown"),
                    started_at=started,
                    ended_at=ended,
                    duration_seconds=seconds_between(started, ended),
                    failure_reason=step.get("FailureReason"),
                    cached_from=cache.get("SourcePipelineExecutionArn"),
                )

    def list(self, limit: int, pipeline: str | None = None) -> ExecutionList:
        name = pipeline or self.pipeline_name
        with _calling("ListPipelineExecutions", name):
            response = self.client.list_pipeline_executions(
                PipelineName=name,
                SortBy="CreationTime",
                SortOrder="Descending",
                MaxResults=limit,
            )
        listed = [
            ExecutionStatus(
                execution_id=summary["PipelineExecutionArn"],
                status=summary.get("PipelineExecutionStatus", "Unknown"),
                started_at=_text(summary.get("StartTime")),
                pipeline_name=name,
                display_name=summary.get("PipelineExecutionDisplayName"),
            )
            for summary in response.get("PipelineExecutionSummaries", [])
        ]
        # newest first and at most ``limit`` whatever the answer (moto 5.2 ignores
        # SortOrder and MaxResults)
        listed.sort(key=lambda e: e.started_at or "", reverse=True)
        return ExecutionList(listed[:limit])

    def retry(self, execution: str, *, progress: Progress | None = None) -> str:
        with _calling("RetryPipelineExecution", execution):
            response = self.client.retry_pipeline_execution(
                PipelineExecutionArn=execution, ClientRequestToken=uuid.uuid4().hex
            )
        return str(response["PipelineExecutionArn"])


@contextlib.contextmanager
def _calling(operation: str, subject: str) -> Iterator[None]:
    """SageMaker's errors as the service's, naming the call and its subject (a
    network or credentials error goes on as it is).
    """
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = (
            f"{operation} on {subject}: {error.get('Code')}: {error.get('Message')}"
        )
        code = _code(exc)
        if code == "ResourceNotFound":
            raise PipelineNotFound(message) from None
        if code in ("ValidationException", "ConflictException"):
            raise PipelineRefused(message) from None
        raise PipelineServiceError(message) from exc


def _code(exc: Any) -> str | None:
    code = exc.response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
