"""Pipelines as a service: upsert a definition, start, describe, list, wait for and
retry its executions, with the same calls on SageMaker and on this machine.

``PipelineService`` is the interface. ``LocalPipelines`` (here) runs definitions with
the local runner and reads its records in ``<state>/executions``;
``pipelines.remote.SageMakerPipelines`` calls the SageMaker API through the client of
the environment's resources. ``stack.resources`` picks one for the environment
(``resources.pipelines``, or ``build_pipelines(config)`` when nothing else is needed);
callers never ask which they have. Importing this module imports neither the runner
nor boto3.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stack.registry import LOCAL_ACCOUNT

if TYPE_CHECKING:
    from pipelines.local_runner import Execution, LocalRunner
    from stack.resources import Resources

TERMINAL = ("Succeeded", "Failed", "Stopped")
# The local runner's progress callback: (event, step record, execution record)
Progress = Callable[[str, Any, Any], None]


@dataclass(frozen=True)
class StepStatus:
    """One step of an execution; ``type`` and ``outcome`` only where the platform
    records them (the local runner).
    """

    name: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    failure_reason: str | None = None
    cached_from: str | None = None
    type: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class ExecutionStatus:
    """One execution. ``execution_id`` is the local id, or SageMaker's ARN; fields a
    platform does not report (a listing's steps, SageMaker's parameters) are None or
    empty.
    """

    execution_id: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    failure_reason: str | None = None
    steps: list[StepStatus] = field(default_factory=list)
    pipeline_name: str | None = None
    parameters: dict[str, Any] | None = None
    attempts: int | None = None
    display_name: str | None = None

    @property
    def failed_step(self) -> StepStatus | None:
        return next((s for s in self.steps if s.status == "Failed"), None)

    @property
    def duration_seconds(self) -> float | None:
        """From the start to the end (or, where no end is recorded, to the last
        step's end), once the execution has ended.
        """
        if self.ended_at:
            return seconds_between(self.started_at, self.ended_at)
        ends = [s.ended_at for s in self.steps if s.ended_at]
        if self.status not in TERMINAL or not ends:
            return None
        return seconds_between(self.started_at, max(ends, key=datetime.fromisoformat))


class ExecutionList(list[ExecutionStatus]):
    """Executions, newest first; ``unreadable``: records that could not be read (one
    being written, or of an older format), left out.
    """

    unreadable: int = 0


@dataclass(frozen=True)
class Upserted:
    action: str  # "Created" or "Updated"
    pipeline_arn: str


class PipelineServiceError(Exception):
    """The service refused or failed a request; the message names the request."""


class PipelineNotFound(PipelineServiceError, LookupError):
    """No such pipeline or execution."""


class PipelineRefused(PipelineServiceError, ValueError):
    """The request is not valid for what exists (e.g. retrying a Succeeded
    execution, a parameter the pipeline does not declare).
    """


class WaitTimeout(Exception):
    """The execution had not ended when the wait ran out; it goes on."""

    def __init__(self, status: ExecutionStatus, seconds: float, where: str) -> None:
        super().__init__(
            f"the execution was still {status.status} after {seconds:.0f}s "
            f"(it goes on in {where}): {status.execution_id}"
        )
        self.status = status


class PipelineService(ABC):
    """Where pipelines are defined and their executions run."""

    # True when executions run in the calling process (the local runner): start and
    # retry return once the execution has ended, and report progress as it runs
    runs_here: bool
    # where executions are kept, for people: a folder, "SageMaker pipeline <name>"
    where: str
    # the platform, in messages such as WaitTimeout's
    platform: str

    def check_access(self) -> None:  # noqa: B027 (most services need no check)
        """Raise ConfigError when the service cannot be reached as configured (no
        credentials); cheap, so commands call it before slow work.
        """

    @abstractmethod
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
        """Create the pipeline ``name`` with ``definition`` (tagged), or update it
        (and add ``tags``)."""

    @abstractmethod
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
        """Start an execution of the upserted pipeline ``name``; returns its id.

        ``token`` makes the start idempotent where the platform supports it
        (SageMaker's ClientRequestToken). Raises PipelineNotFound for a pipeline
        never upserted.
        """

    @abstractmethod
    def describe(self, execution: str) -> ExecutionStatus:
        """One execution with its steps (PipelineNotFound if there is none)."""

    @abstractmethod
    def list(self, limit: int, pipeline: str | None = None) -> ExecutionList:
        """The newest ``limit`` executions, newest first: of ``pipeline``, or of the
        environment's pipelines (locally every record; on SageMaker the training
        pipeline). A listing may leave steps out: ``describe`` has them.
        """

    @abstractmethod
    def retry(self, execution: str, *, progress: Progress | None = None) -> str:
        """Rerun a Failed or Stopped execution from the steps that did not succeed;
        returns the id of the execution that runs (the same one)."""

    def wait(
        self,
        execution: str,
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
            status = self.describe(execution)
            if on_poll:
                on_poll(status)
            if status.status in TERMINAL:
                return status
            elapsed = clock() - started
            if elapsed >= timeout_seconds:
                raise WaitTimeout(status, elapsed, self.platform)
            sleep(min(poll_seconds, max(0.0, timeout_seconds - elapsed)))


class LocalPipelines(PipelineService):
    """The local runner: ``upsert`` keeps the definition in ``<state>/pipelines``,
    ``start`` and ``retry`` run it here to its end, the records are
    ``<state>/executions/<id>/execution.json``. Display names, descriptions and
    tokens are accepted and not kept.
    """

    runs_here = True
    platform = "the local runner"

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        state = resources.config.state_dir.resolve()
        self.root = state / "executions"
        self.where = str(self.root)
        self._pipelines = state / "pipelines"

    def runner(self, progress: Progress | None = None) -> LocalRunner:
        """A runner over the environment's resources, for callers that hold the
        state folder across more than one run (``pipelines.run``)."""
        from pipelines.local_runner import LocalRunner

        return LocalRunner(self.resources, progress=progress)

    def record(self, execution: str) -> Execution:
        """The runner's full record of ``execution`` (properties, property files)."""
        from pipelines.local_runner import Execution

        directory = self.root / execution
        if "/" in execution or not (directory / "execution.json").is_file():
            raise PipelineNotFound(f"no execution {execution} in {self.root}")
        return Execution.load(directory)

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
        region = self.resources.config.aws.region
        arn = f"arn:aws:sagemaker:{region}:{LOCAL_ACCOUNT}:pipeline/{name.lower()}"
        path = self._pipelines / f"{name}.json"
        existing = json.loads(path.read_text()) if path.is_file() else None
        stored = {
            "PipelineArn": arn,
            "PipelineName": name,
            "PipelineDefinition": definition,
            "RoleArn": role_arn,
            "PipelineDescription": description,
            "PipelineDisplayName": display_name,
            "Tags": {**(existing or {}).get("Tags", {}), **(tags or {})},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(stored, indent=2))
        partial.replace(path)
        return Upserted("Updated" if existing else "Created", arn)

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
        from pipelines.local_runner import DefinitionError

        path = self._pipelines / f"{name}.json"
        if not path.is_file():
            raise PipelineNotFound(
                f"StartPipelineExecution on {name}: no such pipeline in "
                f"{self._pipelines} (upsert it first)"
            )
        definition = json.loads(path.read_text())["PipelineDefinition"]
        try:
            execution = self.runner(progress).run(definition, parameters, name)
        except DefinitionError as exc:
            raise PipelineRefused(f"StartPipelineExecution on {name}: {exc}") from None
        return execution.execution_id

    def describe(self, execution: str) -> ExecutionStatus:
        return _status(self.record(execution))

    def list(self, limit: int, pipeline: str | None = None) -> ExecutionList:
        from pipelines.local_runner import Execution

        records, unreadable = [], 0
        for path in sorted(self.root.glob("*/execution.json")):
            try:
                records.append(Execution.load(path.parent))
            except (OSError, ValueError, TypeError, KeyError):
                unreadable += 1  # being written, or from an older format
        if pipeline is not None:
            records = [r for r in records if r.pipeline_name == pipeline]
        records.sort(key=lambda e: e.started_at, reverse=True)
        listed = ExecutionList(_status(r) for r in records[:limit])
        listed.unreadable = unreadable
        return listed

    def retry(self, execution: str, *, progress: Progress | None = None) -> str:
        from pipelines.local_runner import DefinitionError

        self.record(execution)  # PipelineNotFound first
        try:
            return self.runner(progress).retry(execution).execution_id
        except DefinitionError as exc:
            raise PipelineRefused(str(exc)) from None


def _status(record: Execution) -> ExecutionStatus:
    return ExecutionStatus(
        execution_id=record.execution_id,
        status=record.status,
        started_at=record.started_at,
        ended_at=record.ended_at,
        failure_reason=record.failure_reason,
        steps=[
            StepStatus(
                name=s.name,
                status=s.status,
                started_at=s.started_at,
                ended_at=_end(s.started_at, s.duration_seconds),
                duration_seconds=s.duration_seconds,
                failure_reason=s.failure_reason,
                cached_from=s.cached_from,
                type=s.type,
                outcome=s.outcome,
            )
            for s in record.steps
        ],
        pipeline_name=record.pipeline_name,
        parameters=dict(record.parameters),
        attempts=record.attempts,
    )


def _end(started_at: str | None, seconds: float | None) -> str | None:
    if started_at is None or seconds is None:
        return None
    return (datetime.fromisoformat(started_at) + timedelta(seconds=seconds)).isoformat()


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO 8601 instant to another; None if either is missing or
    unreadable (a record written by hand or by an older runner).
    """
    if not (start and end):
        return None
    try:
        return (
            datetime.fromisoformat(end) - datetime.fromisoformat(start)
        ).total_seconds()
    except ValueError:
        return None
