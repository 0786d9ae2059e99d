"""The pipeline service's contract, run against both implementations: the local
runner (``LocalPipelines``) and SageMaker (``SageMakerPipelines`` on moto).

moto 5.2 has no ListPipelineExecutionSteps and no RetryPipelineExecution, and its
executions succeed at once without running a step. Those calls, and the status of an
execution a test makes fail, are answered by a stub at botocore's boundary (a
before-call hook on the client), as SageMaker answers them; the rest is moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipelines.remote import SageMakerPipelines
from pipelines.service import (
    TERMINAL,
    ExecutionStatus,
    LocalPipelines,
    PipelineNotFound,
    PipelineRefused,
    PipelineService,
    PipelineServiceError,
    WaitTimeout,
)
from stack.config import ConfigError, load_config
from stack.resources import build_pipelines, build_resources

NAME = "contract-pipeline"
ROLE = "arn:aws:iam::000000000000:role/mlops-dev"
# No job runs: CheckScore goes on when Score >= 0.5, else its Fail step stops it
DEFINITION: dict[str, Any] = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Score", "Type": "Float", "DefaultValue": 0.9}],
    "Steps": [
        {
            "Name": "CheckScore",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {
                        "Type": "GreaterThanOrEqualTo",
                        "LeftValue": {"Get": "Parameters.Score"},
                        "RightValue": 0.5,
                    }
                ],
                "IfSteps": [],
                "ElseSteps": [
                    {
                        "Name": "TooLow",
                        "Type": "Fail",
                        "Arguments": {"ErrorMessage": "the score is too low"},
                    }
                ],
            },
        }
    ],
}


class SageMakerPlay:
    """What the stubbed calls answer: each execution plays the definition as the
    local runner does (a Score below 0.5 fails at TooLow).
    """

    def __init__(self, client: Any) -> None:
        self.failed: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        requested: dict[str, dict[str, Any]] = {}

        def remember(params: dict[str, Any], model: Any, **_: Any) -> None:
            requested[model.name] = dict(params)

        def answer(model: Any, **_: Any) -> Any:
            params = requested.pop(model.name, {})
            self.calls.append((model.name, params))
            ok = SimpleNamespace(status_code=200, headers={})
            arn = params.get("PipelineExecutionArn")
            if model.name == "ListPipelineExecutionSteps":
                return ok, {"PipelineExecutionSteps": self.steps(arn)}
            if model.name == "RetryPipelineExecution":
                if arn not in self.failed:
                    refused = SimpleNamespace(status_code=400, headers={})
                    message = "only a Failed or Stopped execution can be retried"
                    error = {"Code": "ValidationException", "Message": message}
                    return refused, {"Error": error}
                return ok, {"PipelineExecutionArn": arn}
            if model.name == "DescribePipelineExecution" and arn in self.failed:
                return ok, {
                    "PipelineExecutionArn": arn,
                    "PipelineExecutionStatus": "Failed",
                    "CreationTime": datetime(2026, 11, 24, tzinfo=UTC),
                }
            return None  # moto answers

        client.meta.events.register("before-parameter-build.sagemaker.*", remember)
        client.meta.events.register("before-call.sagemaker.*", answer)

    def steps(self, arn: str | None) -> list[dict[str, Any]]:
        check = {"StepName": "CheckScore", "StepStatus": "Succeeded"}
        if arn not in self.failed:
            return [check]
        return [
            check,
            {
                "StepName": "TooLow",
                "StepStatus": "Failed",
                "FailureReason": "the score is too low",
            },
        ]


class Platform:
    """A service, and the way this platform makes an execution that failed."""

    def __init__(self, service: PipelineService, play: SageMakerPlay | None) -> None:
        self.service = service
        self._play = play

    def failed_execution(self) -> str:
        execution = self.service.start(NAME, {"Score": 0.1})
        if self._play is not None:  # moto succeeded it: SageMaker would not
            self._play.failed.add(execution)
        return execution


@pytest.fixture(params=["local", "sagemaker"])
def platform(
    request: pytest.FixtureRequest, tmp_path: Path, aws_credentials: None
) -> Iterator[Platform]:
    if request.param == "local":
        config = load_config("local", {"state_dir": str(tmp_path)}, environ={})
        service = build_resources(config).pipelines
        assert isinstance(service, LocalPipelines)
        yield Platform(service, None)
        return
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        play = SageMakerPlay(client)
        yield Platform(SageMakerPipelines(client, NAME), play)


def upserted(platform: Platform) -> PipelineService:
    service = platform.service
    service.upsert(DEFINITION, name=NAME, role_arn=ROLE, description="contract")
    return service


def test_upsert_creates_then_updates_the_same_pipeline(platform: Platform) -> None:
    service = platform.service
    first = service.upsert(
        DEFINITION,
        name=NAME,
        role_arn=ROLE,
        description="contract",
        tags={"environment": "test"},
        display_name="Contract",
    )
    second = service.upsert(DEFINITION, name=NAME, role_arn=ROLE, description="again")
    assert (first.action, second.action) == ("Created", "Updated")
    assert first.pipeline_arn == second.pipeline_arn
    assert first.pipeline_arn.startswith("arn:aws:sagemaker:us-east-1:")
    assert first.pipeline_arn.endswith(f":pipeline/{NAME}")


def test_start_runs_the_upserted_definition(platform: Platform) -> None:
    service = upserted(platform)
    execution = service.start(NAME, {"Score": 0.9}, display_name="first")
    status = service.wait(execution, timeout_seconds=5, poll_seconds=0.01)
    assert status.execution_id == execution
    assert status.status == "Succeeded" and status.failed_step is None
    succeeded = [s.name for s in status.steps if s.status == "Succeeded"]
    assert succeeded == ["CheckScore"]
    assert service.describe(execution) == status


def test_a_failed_execution_names_its_step_and_can_be_retried(
    platform: Platform,
) -> None:
    service = upserted(platform)
    failed = platform.failed_execution()
    status = service.describe(failed)
    assert status.status == "Failed"
    assert status.failed_step is not None
    assert status.failed_step.name == "TooLow"
    assert "the score is too low" in (status.failed_step.failure_reason or "")
    assert service.retry(failed) == failed  # the same execution runs again
    assert service.describe(failed).status in TERMINAL


def test_only_a_failed_or_stopped_execution_is_retried(platform: Platform) -> None:
    service = upserted(platform)
    execution = service.start(NAME, {})
    with pytest.raises(PipelineRefused):
        service.retry(execution)


def test_list_shows_the_newest_executions(platform: Platform) -> None:
    service = upserted(platform)
    assert list(service.list(10)) == []
    older = service.start(NAME, {})
    newer = platform.failed_execution()
    listed = service.list(10, pipeline=NAME)
    # newest first, by start time: moto's times have whole seconds, so not the order
    assert {e.execution_id for e in listed} == {newer, older}
    starts = [datetime.fromisoformat(e.started_at or "") for e in listed]
    assert starts == sorted(starts, reverse=True)
    assert all(e.status in TERMINAL for e in listed)
    assert len(service.list(1)) == 1
    assert listed.unreadable == 0


def test_unknown_pipelines_and_executions_are_refused(platform: Platform) -> None:
    service = platform.service
    with pytest.raises(PipelineServiceError, match=f"StartPipelineExecution on {NAME}"):
        service.start(NAME, {})
    upserted(platform)
    with pytest.raises(PipelineServiceError) as raised:
        service.describe(
            "arn:aws:sagemaker:us-east-1:000000000000:pipeline/other/execution/nope"
        )
    assert isinstance(raised.value, PipelineNotFound | PipelineRefused)


def test_waiting_gives_up_on_an_execution_that_goes_on(platform: Platform) -> None:
    service = upserted(platform)
    execution = service.start(NAME, {})
    running = ExecutionStatus(execution, "Executing")
    service.describe = lambda _: running  # type: ignore[method-assign]
    seen: list[str] = []
    with pytest.raises(WaitTimeout, match="still Executing") as raised:
        service.wait(
            execution, 0.05, 0.01, on_poll=lambda status: seen.append(status.status)
        )
    assert raised.value.status is running and seen[0] == "Executing"


# -- what only one side has -------------------------------------------------------------


def test_the_environment_picks_the_service(tmp_path: Path) -> None:
    local = load_config("local", {"state_dir": str(tmp_path)}, environ={})
    assert build_pipelines(local).runs_here
    assert build_resources(local).pipelines.runs_here
    dev = load_config("dev", environ={})
    service = build_pipelines(dev)
    assert isinstance(service, SageMakerPipelines) and not service.runs_here


def test_resources_stay_cheap_until_the_service_is_used(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from stack.config import load_config; "
        "from stack.resources import build_resources; "
        f"r = build_resources(load_config('local', {{'state_dir': {str(tmp_path)!r}}},"
        " environ={})); "
        "before = [m for m in ('pipelines.local_runner', 'sagemaker', 'boto3')"
        " if m in sys.modules]; r.pipelines; "
        "print(before, 'sagemaker' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == "[] False"


def test_sagemaker_without_credentials_is_a_configuration_error() -> None:
    service = SageMakerPipelines(object(), NAME, credentials_found=lambda: False)
    with pytest.raises(ConfigError, match="no AWS credentials found"):
        service.check_access()


def test_the_local_platform_keeps_the_upserted_definition(tmp_path: Path) -> None:
    config = load_config("local", {"state_dir": str(tmp_path)}, environ={})
    service = build_resources(config).pipelines
    service.upsert(
        DEFINITION, name=NAME, role_arn=ROLE, description="kept", tags={"a": "1"}
    )
    service.upsert(DEFINITION, name=NAME, role_arn=ROLE, description="kept", tags={})
    stored = json.loads((tmp_path / "pipelines" / f"{NAME}.json").read_text())
    assert stored["PipelineDefinition"] == DEFINITION
    assert stored["Tags"] == {"a": "1"}  # an update adds tags, as AddTags does
    with pytest.raises(PipelineRefused, match="unknown parameter"):
        service.start(NAME, {"Nope": "1"})
