"""Pipeline executions on SageMaker: start, wait with progress, list, describe, retry.

Thin functions over the SageMaker API (boto3), shaped like the local runner's records so
the CLI shows both the same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stack.config import Config, ConfigError

TERMINAL = ("Succeeded", "Failed", "Stopped")


@dataclass(frozen=True)
class StepStatus:
    name: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    failure_reason: str | None = None
    cached_from: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if not (self.started_at and self.ended_at):
            return None
        ended = datetime.fromisoformat(self.ended_at)
        return (ended - datetime.fromisoformat(self.started_at)).total_seconds()


@dataclass(frozen=True)
class ExecutionStatus:
    arn: str
    status: str
    started_at: str | None = None
    failure_reason: str | None = None
    steps: list[StepStatus] = field(default_factory=list)

    @property
    def failed_step(self) -> StepStatus | None:
        return next((s for s in self.steps if s.status == "Failed"), None)


class WaitTimeout(Exception):
    """The execution had not ended when the wait ran out; it goes on in SageMaker."""

    def __init__(self, status: ExecutionStatus, seconds: float) -> None:
        super().__init__(
            f"the execution was still {status.status} after {seconds:.0f}s "
            f"(it goes on in SageMaker): {status.arn}"
        )
        self.status = status


def sagemaker_client(config: Config) -> Any:
    """A SageMaker client for ``config``, or ConfigError when no credentials exist."""
    import boto3

    session = boto3.Session(region_name=config.aws.region)
    if session.get_credentials() is None:
        raise ConfigError(
            "no AWS credentials found (set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,"
            " or run where an IAM role is attached)"
        )
    return session.client("sagemaker", endpoint_url=config.aws.endpoint_url)


def start_execution(
    client: Any,
    pipeline_name: str,
    parameters: Mapping[str, Any],
    display_name: str | None = None,
) -> str:
    request: dict[str, Any] = {
        "PipelineName": pipeline_name,
        "PipelineParameters": [
            {"Name": k, "Value": str(v)} for k, v in parameters.items()
        ],
        "ClientRequestToken": uuid.uuid4().hex,
    }
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name
    return str(client.start_pipeline_execution(**request)["PipelineExecutionArn"])


def describe_execution(client: Any, arn: str) -> ExecutionStatus:
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    steps: list[StepStatus] = []
    paginator = client.get_paginator("list_pipeline_execution_steps")
    for page in paginator.paginate(PipelineExecutionArn=arn, SortOrder="Ascending"):
        for step in page.get("PipelineExecutionSteps", []):
            cache = step.get("CacheHitResult") or {}
            steps.append(
                StepStatus(
                    name=step["StepName"],
                    status=step.get("StepStatus", "Unknown"),
                    started_at=_text(step.get("StartTime")),
                    ended_at=_text(step.get("EndTime")),
                    failure_reason=step.get("FailureReason"),
                    cached_from=cache.get("SourcePipelineExecutionArn"),
                )
            )
    return ExecutionStatus(
        arn=arn,
        status=described["PipelineExecutionStatus"],
        started_at=_text(described.get("CreationTime")),
        failure_reason=described.get("FailureReason"),
        steps=steps,
    )


def wait_for_execution(
    client: Any,
    arn: str,
    timeout_seconds: float,
    poll_seconds: float = 30.0,
    on_poll: Callable[[ExecutionStatus], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ExecutionStatus:
    """Poll until the execution ends; ``on_poll`` sees every status read.

    Raises:
        WaitTimeout: it had not ended after ``timeout_seconds``.
    """
    started = clock()
    while True:
        status = describe_execution(client, arn)
        if on_poll:
            on_poll(status)
        if status.status in TERMINAL:
            return status
        elapsed = clock() - started
        if elapsed >= timeout_seconds:
            raise WaitTimeout(status, elapsed)
        sleep(min(poll_seconds, max(0.0, timeout_seconds - elapsed)))


def list_executions(client: Any, pipeline_name: str, limit: int) -> list[dict]:
    response = client.list_pipeline_executions(
        PipelineName=pipeline_name,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=limit,
    )
    return [
        {
            "execution": summary["PipelineExecutionArn"],
            "status": summary.get("PipelineExecutionStatus"),
            "started_at": _text(summary.get("StartTime")),
            "display_name": summary.get("PipelineExecutionDisplayName"),
        }
        for summary in response.get("PipelineExecutionSummaries", [])
    ]


def retry_execution(client: Any, arn: str) -> str:
    response = client.retry_pipeline_execution(
        PipelineExecutionArn=arn, ClientRequestToken=uuid.uuid4().hex
    )
    return str(response["PipelineExecutionArn"])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
