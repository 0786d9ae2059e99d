"""Create or update the training pipeline in SageMaker, start an execution of it and
wait for its end, printing each step: ``python -m pipelines.run --upsert [--start]
[--wait]`` and the SageMaker Projects template's ``run-pipeline``.

The definition is checked against SageMaker's API model, and the parameters against
the definition, before anything is sent. The definition (the SageMaker SDK) is imported
when it is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import stack.resources
from pipelines.console import EXIT_FAILED, EXIT_OK, Console, UsageError, show_step
from pipelines.local_runner import DefinitionError, bind_parameters
from pipelines.service import ExecutionStatus, PipelineService, WaitTimeout
from stack.config import Config, ConfigError

_TAG_KEY = re.compile(r"^[\w.:/=+@ -]{1,128}$")
_DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")


@dataclass(frozen=True)
class UpsertRequest:
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    display_name: str | None = None
    start: bool = False
    wait: bool = False
    wait_timeout: float = 4 * 3600
    poll_interval: float = 30.0


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` if SageMaker would take them as they are, else UsageError."""
    for key, value in tags.items():
        if not _TAG_KEY.match(key) or key.lower().startswith("aws:"):
            raise UsageError(
                f"tag key {key!r}: 1-128 letters, digits, spaces and _.:/=+-@, "
                "not starting with aws:"
            )
        if len(value) > 256:
            raise UsageError(f"tag {key}: the value is over 256 characters")
    return tags


def check_display_name(name: str) -> str:
    """``name`` if SageMaker would take it as a display name, else UsageError."""
    if not _DISPLAY_NAME.match(name):
        raise UsageError(
            "--display-name takes 1-82 letters, digits and single hyphens, "
            f"got {name!r}"
        )
    return name


def sagemaker_pipelines(config: Config) -> tuple[PipelineService, str]:
    """The environment's pipeline service and execution role, checked before any
    definition is built: an AWS environment (UsageError), the role (ConfigError:
    likelier missing than the credentials, so asked first), then the credentials.
    """
    service = stack.resources.build_pipelines(config)
    if service.runs_here:
        raise UsageError(
            "--upsert needs an AWS environment: pass --env dev, staging or prod"
        )
    role_arn = config.execution_role
    service.check_access()
    return service, role_arn


def upsert_and_report(config: Config, console: Console, request: UpsertRequest) -> int:
    """Upsert the pipeline, start and wait for it as asked; returns the exit code."""
    service, role_arn = sagemaker_pipelines(config)
    name = config.sagemaker.pipeline_name
    result = service.upsert(
        checked_definition(config, request.parameters),
        name=name,
        role_arn=role_arn,
        description=request.description or f"churn pipeline ({config.env})",
        tags={"environment": config.env, **request.tags},
        display_name=request.display_name,
    )
    console.event(
        "upserted",
        f"{result.action} pipeline {result.pipeline_arn}",
        action=result.action,
        pipeline_arn=result.pipeline_arn,
    )
    if not request.start:
        return EXIT_OK
    execution = service.start(
        name, request.parameters, display_name=request.display_name
    )
    console.event("started", f"started execution {execution}", execution_arn=execution)
    if not request.wait:
        return EXIT_OK
    return wait_and_report(service, execution, request, console)


def checked_definition(config: Config, parameters: dict[str, str]) -> dict[str, Any]:
    """The definition to send, checked against SageMaker's API model, and the
    parameters against it, before anything is sent.
    """
    from pipelines.definition import build_definition  # pandas; the SDK to build

    definition = build_definition(config)
    try:
        bind_parameters(definition, parameters)
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from None
    return definition


def wait_and_report(
    service: PipelineService, execution: str, request: UpsertRequest, console: Console
) -> int:
    """Poll ``execution`` until it ends (or the request's timeout), a line per step
    status seen; returns the exit code (0 succeeded, 1 otherwise).
    """
    seen: dict[str, str] = {}

    def show(status: ExecutionStatus) -> None:
        for step in status.steps:
            if seen.get(step.name) != step.status:
                seen[step.name] = step.status
                console.event(
                    "step",
                    f"  {step.name:<16}{step.status}",
                    step=step.name,
                    status=step.status,
                )

    try:
        final = service.wait(
            execution, request.wait_timeout, request.poll_interval, on_poll=show
        )
    except WaitTimeout as timeout:
        console.error(str(timeout), exit_code=EXIT_FAILED)
        return EXIT_FAILED
    for step in final.steps:
        show_step(console, step, event="step_result")
    if final.status == "Succeeded":
        console.event(
            "execution", "Succeeded", status=final.status, execution_arn=execution
        )
        return EXIT_OK
    failed = final.failed_step
    reason = (
        f"step {failed.name}: {failed.failure_reason}"
        if failed
        else final.failure_reason or f"the execution {final.status.lower()}"
    )
    console.event(
        "execution",
        f"Failed: {reason}",
        status=final.status,
        execution_arn=execution,
        failed_step=failed.name if failed else None,
    )
    return EXIT_FAILED
