"""Execute a SageMaker pipeline definition on this machine.

The runner knows the pipeline only through its definition JSON, the same document
``--upsert`` sends to SageMaker: it orders steps by ``DependsOn`` and by the steps their
arguments refer to, resolves parameters, execution variables and step properties, runs
processing and training steps under the container contract (``pipelines.local_jobs``),
evaluates conditions, and hands RegisterModel, Model, EndpointConfig and Endpoint steps
to the registry and endpoint deployer of the environment. Each execution is recorded in
``<state>/executions/<id>/``: the definition it ran, and every step's status, duration
and failure reason.

As on SageMaker: steps whose dependencies are met run at the same time; a step with
``CacheConfig`` reuses an earlier run with the same key (``pipelines.step_cache``); and
a failed execution can be retried, rerunning only the steps that did not succeed. Retry
policies are for the service's own errors (throttling, capacity) that a local run does
not meet, so they are not emulated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.expressions import (
    EvaluationContext,
    ExpressionError,
    references,
    resolve,
)
from pipelines.image import DOCKERFILE, ImageError, StagedImage, stage_image
from pipelines.local_jobs import (
    Container,
    JobFailed,
    Platform,
    RunningJobs,
    run_processing_job,
    run_training_job,
)
from pipelines.local_tuning import run_tuning_job
from pipelines.parameters import ParameterError, check_parameters
from pipelines.step_cache import CachedStep, StepCache
from stack.config import Config
from stack.endpoints import EndpointError, LocalEndpoints
from stack.objectstore import ObjectStoreError, join_uri
from stack.registry import LOCAL_ACCOUNT, RegistryError

if TYPE_CHECKING:  # the runner is built from the resources, never builds them
    from stack.resources import Resources

SUCCEEDED, FAILED, EXECUTING = "Succeeded", "Failed", "Executing"
NOT_EXECUTED, STOPPED = "NotExecuted", "Stopped"


class DefinitionError(Exception):
    """The definition or the parameters given for it cannot be executed."""


@dataclass
class StepRecord:
    name: str
    type: str
    status: str = "Pending"
    started_at: str | None = None
    duration_seconds: float | None = None
    failure_reason: str | None = None
    outcome: str | None = None  # a condition's result, a job's name, an ARN ...
    logs: list[str] = field(default_factory=list)
    cached_from: str | None = None  # the execution whose run of this step was reused


@dataclass
class Execution:
    execution_id: str
    pipeline_name: str
    parameters: dict[str, Any]
    directory: str
    status: str = EXECUTING
    started_at: str = field(default_factory=lambda: _now())
    ended_at: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    property_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: int = 1  # 1 + the number of retries
    # the process executing it (pid, its start time, host): its lease on the record
    runner: dict[str, Any] | None = None
    failure_reason: str | None = None  # why it failed, when no step says it

    @classmethod
    def load(cls, directory: Path) -> Execution:
        """The execution recorded in ``directory`` (its ``execution.json``).

        An execution still ``Executing`` whose runner is gone (killed, crashed, the
        machine restarted) is recorded as Failed, "runner died", and so can be retried.
        """
        data = json.loads((directory / "execution.json").read_text())
        steps = [StepRecord(**step) for step in data.pop("steps")]
        execution = cls(**data, steps=steps)
        if execution.status == EXECUTING and runner_died(execution.runner):
            execution.mark_runner_died()
            execution.save()
        return execution

    def mark_runner_died(self) -> None:
        pid = (self.runner or {}).get("pid")
        reason = f"runner died (pid {pid}) while the step ran"
        for record in self.steps:
            if record.status == EXECUTING:
                record.status, record.failure_reason = FAILED, reason
            elif record.status == "Pending":
                record.status = NOT_EXECUTED
        self.status, self.ended_at = FAILED, _now()
        self.failure_reason = reason.replace(" while the step ran", "")

    @property
    def failed_step(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == FAILED), None)

    def step(self, name: str) -> StepRecord:
        return next(s for s in self.steps if s.name == name)

    def save(self) -> None:
        path = Path(self.directory) / "execution.json"
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)


def runner_identity() -> dict[str, Any]:
    """This process, as an execution's lease names it."""
    pid = os.getpid()
    return {"pid": pid, "started": _process_start(pid), "host": socket.gethostname()}


def runner_died(runner: Mapping[str, Any] | None) -> bool:
    """True if the process ``runner`` names is gone (or its pid is another process's
    now). A runner on another host, or an old record without one, is not judged.
    """
    if not runner or runner.get("host") != socket.gethostname():
        return False
    pid = int(runner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    started = _process_start(pid)
    return started is not None and started != runner.get("started")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: count fields after its ')'
    return stat.rsplit(")", 1)[1].split()[19]


class StateBusy(DefinitionError):
    """Another runner is executing in this state folder."""


class StateLock:
    """One runner at a time per state folder (an exclusive ``flock``), re-entrant in
    the process that holds it, released if that process dies.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / ".runner.lock"
        self._held = 0
        self._file: Any = None
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._guard:
            if not self._held:
                self._acquire()
            self._held += 1
        try:
            yield
        finally:
            with self._guard:
                self._held -= 1
                if not self._held:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                    self._file.close()
                    self._file = None

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StateBusy(
                f"{holder} is executing a pipeline in {self.path.parent}: "
                "wait for it to end, or use another --state-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle


@dataclass
class _Step:
    definition: dict[str, Any]
    depends_on: set[str]
    branch: tuple[str, bool] | None  # (condition step, which outcome enables it)

    @property
    def name(self) -> str:
        return str(self.definition["Name"])


Progress = Callable[[str, StepRecord, Execution], None]


class LocalRunner:
    def __init__(
        self,
        resources: Resources,
        progress: Progress | None = None,
        max_parallel_steps: int = 4,
        image: StagedImage | None = None,
        dockerfile: Path = DOCKERFILE,
        isolation: str = "auto",
        context: Path | None = None,
    ) -> None:
        """``image``: the staged image jobs run in; None stages ``dockerfile`` (once
        per content digest, under ``<state>/images``) when the first job starts.
        ``isolation``: ``auto``, ``bwrap`` or ``none`` (``pipelines.local_jobs``).
        ``context``: the build context (default: the Dockerfile's folder).
        """
        self.resources = resources
        self.progress = progress or (lambda event, step, execution: None)
        self.max_parallel_steps = max_parallel_steps
        self._image = image
        self._dockerfile = dockerfile
        self._context = context
        self._isolation = isolation
        self._container: Container | None = None
        self._staging: Future[Container] | None = None
        serve_from_image(resources, self.container)
        self.state_dir = resources.config.state_dir.resolve()
        self.cache = StepCache(self.state_dir / "step-cache", resources.store)
        self.state_lock = StateLock(self.state_dir)
        self._lock = threading.RLock()  # guards the execution record across steps
        self._jobs = RunningJobs()
        self._tracking_store: threading.Thread | None = None

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold the state folder for this runner alone (StateBusy if another has it):
        a caller that prepares the state first (the demo data) holds it across both.
        """
        return self.state_lock.hold()

    def run(
        self,
        definition: dict[str, Any],
        overrides: Mapping[str, Any] | None = None,
        pipeline_name: str | None = None,
    ) -> Execution:
        """Start a new execution of ``definition`` and run it to its end."""
        with self.exclusive():
            return self._run(definition, overrides, pipeline_name)

    def _run(
        self,
        definition: dict[str, Any],
        overrides: Mapping[str, Any] | None,
        pipeline_name: str | None,
    ) -> Execution:
        parameters = bind_parameters(definition, overrides or {})
        steps = flatten_steps(definition)
        execution_id = secrets.token_hex(6)
        name = pipeline_name or self.resources.config.sagemaker.pipeline_name
        directory = self.state_dir / "executions" / execution_id
        directory.mkdir(parents=True)
        (directory / "definition.json").write_text(json.dumps(definition, indent=2))
        execution = Execution(
            execution_id,
            name,
            parameters,
            str(directory),
            steps=[StepRecord(s.name, s.definition["Type"]) for s in steps],
        )
        return self._drive(steps, execution)

    def retry(self, execution_id: str) -> Execution:
        """Run a Failed or Stopped execution again from the steps that did not succeed.

        Succeeded steps keep their outputs and properties, as SageMaker's
        RetryPipelineExecution does; the definition and parameters are the ones the
        execution started with.
        """
        with self.exclusive():
            return self._retry(execution_id)

    def _retry(self, execution_id: str) -> Execution:
        directory = self.state_dir / "executions" / execution_id
        if not (directory / "execution.json").exists():
            raise DefinitionError(f"no execution {execution_id} in {directory.parent}")
        execution = Execution.load(directory)
        if execution.status not in (FAILED, STOPPED):
            raise DefinitionError(
                f"execution {execution_id} is {execution.status}: only a Failed or "
                "Stopped execution can be retried"
            )
        steps = flatten_steps(json.loads((directory / "definition.json").read_text()))
        for record in execution.steps:
            if record.status != SUCCEEDED:
                execution.properties.pop(record.name, None)
                execution.property_files.pop(record.name, None)
                fresh = StepRecord(record.name, record.type)
                record.__dict__.update(fresh.__dict__)
        execution.status, execution.ended_at = EXECUTING, None
        execution.failure_reason = None
        execution.attempts += 1
        return self._drive(steps, execution)

    def _drive(self, steps: list[_Step], execution: Execution) -> Execution:
        config = self.resources.config
        name, execution_id = execution.pipeline_name, execution.execution_id
        context = EvaluationContext(
            parameters=execution.parameters,
            execution={
                "PipelineExecutionId": execution_id,
                "PipelineName": name,
                "PipelineExecutionArn": (
                    f"arn:aws:sagemaker:{config.aws.region}:{LOCAL_ACCOUNT}:"
                    f"pipeline/{name}/execution/{execution_id}"
                ),
                "StartDateTime": execution.started_at,
                "CurrentDateTime": _now(),
            },
            steps=execution.properties,
            property_files=execution.property_files,
        )
        execution.runner = runner_identity()
        self._save(execution)
        self._jobs = RunningJobs()  # a fresh set: an interrupted run stopped the last
        self._tracking_store = _start_creating_tracking_store(steps)
        try:
            self._execute(steps, execution, context)
        except KeyboardInterrupt:
            with self._lock:
                execution.status, execution.ended_at = STOPPED, _now()
            self._save(execution)
            raise
        execution.ended_at = _now()
        if execution.status == EXECUTING:
            execution.status = SUCCEEDED
        self._save(execution)
        return execution

    def _execute(
        self, steps: list[_Step], execution: Execution, context: EvaluationContext
    ) -> None:
        """Run every step whose dependencies are met, several at a time."""
        done = {r.name for r in execution.steps if r.status == SUCCEEDED}
        outcome = {  # the branches conditions took (kept across a retry)
            name: props["Outcome"] == "true"
            for name, props in execution.properties.items()
            if "Outcome" in props
        }
        pending = [s for s in steps if s.name not in done]
        running: dict[Future[None], _Step] = {}
        with ThreadPoolExecutor(self.max_parallel_steps, "step") as pool:
            try:
                while True:
                    for step in self._ready(pending, done, outcome, execution):
                        record = execution.step(step.name)
                        record.status, record.started_at = EXECUTING, _now()
                        self._save(execution)  # what a crash would leave behind
                        self.progress("start", record, execution)
                        future = pool.submit(
                            self._run_step, step, record, execution, context, outcome
                        )
                        running[future] = step
                    if not running:
                        break
                    finished, _ = wait(running, timeout=1, return_when=FIRST_COMPLETED)
                    for future in finished:
                        step = running.pop(future)
                        future.result()  # _run_step records every failure itself
                        if execution.step(step.name).status == SUCCEEDED:
                            done.add(step.name)
            except KeyboardInterrupt:  # no job outlives the runner
                self._jobs.kill_all()
                wait(running)
                for step in running.values():
                    record = execution.step(step.name)
                    record.status, record.failure_reason = STOPPED, "interrupted"
                raise
        for record in execution.steps:
            if record.status == "Pending":
                record.status = NOT_EXECUTED

    def _ready(
        self,
        pending: list[_Step],
        done: set[str],
        outcome: dict[str, bool],
        execution: Execution,
    ) -> list[_Step]:
        """Take the steps that can start now off ``pending``; skip untaken branches."""
        if execution.status != EXECUTING:
            return []
        ready = []
        for step in [s for s in pending if s.depends_on <= done]:
            pending.remove(step)
            if (
                step.branch is not None
                and outcome.get(step.branch[0]) != step.branch[1]
            ):
                execution.step(step.name).status = NOT_EXECUTED
            else:
                ready.append(step)
        return ready

    def _run_step(
        self,
        step: _Step,
        record: StepRecord,
        execution: Execution,
        context: EvaluationContext,
        outcome: dict[str, bool],
    ) -> None:
        started = time.monotonic()
        try:
            arguments = step.definition.get("Arguments", {})
            if step.definition["Type"] == "Condition":
                arguments = {"Conditions": arguments.get("Conditions", [])}
            arguments = resolve(arguments, context)
            cache_key = (
                StepCache.key(step.definition, arguments, self.container().image.digest)
                if StepCache.applies_to(step.definition)
                else None
            )
            hit = cache_key and self.cache.lookup(
                execution.pipeline_name, step.definition, cache_key
            )
            if hit:
                self._set_properties(execution, step.name, hit.properties)
                if hit.property_files:
                    with self._lock:
                        execution.property_files[step.name] = hit.property_files
                record.cached_from = hit.execution_id
                record.outcome = f"cached from execution {hit.execution_id}"
            else:
                record.outcome = self._dispatch(
                    step, arguments, execution, context, outcome
                )
                if cache_key:
                    self.cache.save(
                        execution.pipeline_name,
                        step.definition,
                        cache_key,
                        CachedStep(
                            execution.execution_id,
                            _now(),
                            execution.properties[step.name],
                            execution.property_files.get(step.name, {}),
                        ),
                    )
            record.status = SUCCEEDED
        except _StepFailure as failure:
            record.status, record.failure_reason = FAILED, str(failure)
        except JobFailed as failure:
            record.status, record.failure_reason = FAILED, str(failure)
            record.logs = [str(p) for p in failure.log_paths]
        except (
            ExpressionError,
            RegistryError,
            EndpointError,
            ObjectStoreError,
            DefinitionError,
        ) as exc:
            record.status, record.failure_reason = FAILED, str(exc)
        except Exception as exc:  # an unforeseen error fails this step, not the runner
            record.status = FAILED
            record.failure_reason = f"{type(exc).__name__}: {exc}"
        record.duration_seconds = round(time.monotonic() - started, 2)
        if record.status == FAILED:
            with self._lock:
                execution.status = FAILED
        self._save(execution)
        self.progress("end", record, execution)

    def _set_properties(
        self, execution: Execution, name: str, properties: dict[str, Any]
    ) -> None:
        with self._lock:
            execution.properties[name] = properties

    def _save(self, execution: Execution) -> None:
        with self._lock:
            execution.save()

    def _dispatch(
        self,
        step: _Step,
        arguments: dict[str, Any],
        execution: Execution,
        context: EvaluationContext,
        outcome: dict[str, bool],
    ) -> str | None:
        kind, name = step.definition["Type"], step.name
        work_dir = Path(execution.directory) / "steps" / name
        record = execution.step(name)
        job_name = f"pipelines-{execution.execution_id}-{name}".lower()
        if kind in ("Training", "Tuning") and self._tracking_store is not None:
            self._tracking_store.join()  # the jobs log to it
        if kind in ("Processing", "Training"):
            run_job = run_processing_job if kind == "Processing" else run_training_job
            result = run_job(
                job_name,
                arguments,
                work_dir,
                self.resources.store,
                self.container(),
                self._jobs,
            )
            record.logs = [str(p) for p in result.log_paths]
            files = self._property_files(step, result.properties)
            self._set_properties(execution, name, result.properties)
            if kind == "Processing":
                with self._lock:
                    execution.property_files[name] = files
            return job_name
        if kind == "Tuning":
            # SageMaker's limit for a tuning job's name is 32 characters
            tuning_job_name = job_name[:32].rstrip("-")
            container = self.container()
            tuning = run_tuning_job(
                tuning_job_name,
                arguments,
                work_dir,
                lambda trial, request, folder: run_training_job(
                    trial,
                    request,
                    folder,
                    self.resources.store,
                    container,
                    self._jobs,
                ),
                container.platform.region,
            )
            record.logs = [str(p) for p in tuning.log_paths]
            self._set_properties(execution, name, tuning.properties)
            return tuning_job_name
        if kind == "Condition":
            holds = all(evaluate_condition(c) for c in arguments["Conditions"])
            self._set_properties(execution, name, {"Outcome": str(holds).lower()})
            outcome[name] = holds
            return "true" if holds else "false"
        if kind == "Fail":
            raise _StepFailure(
                str(arguments.get("ErrorMessage", "the pipeline reached a FailStep"))
            )
        if kind == "RegisterModel":
            package = self._registered_by(execution, arguments) or (
                self.resources.registry.register(arguments)
            )
            self._set_properties(
                execution,
                name,
                {
                    "ModelPackageArn": package.arn,
                    "ModelPackageVersion": package.version,
                    "ModelApprovalStatus": package.approval_status,
                    "ModelPackageGroupName": package.group,
                },
            )
            return package.arn
        if kind == "Model":
            model_name = self.resources.endpoints.create_model(arguments)
            self._set_properties(execution, name, {"ModelName": model_name})
            return model_name
        if kind == "EndpointConfig":
            config_name = self.resources.endpoints.create_endpoint_config(arguments)
            self._set_properties(execution, name, {"EndpointConfigName": config_name})
            return config_name
        if kind == "Endpoint":
            info = self.resources.endpoints.create_or_update_endpoint(arguments)
            self._set_properties(
                execution,
                name,
                {
                    "EndpointName": info.name,
                    "EndpointStatus": info.status,
                    "EndpointConfigName": info.config_name,
                    "Url": info.url,
                },
            )
            return info.url or info.name
        raise DefinitionError(
            f"step type {kind!r} is not supported by the local runner"
        )

    def _registered_by(
        self, execution: Execution, arguments: dict[str, Any]
    ) -> Any | None:
        """The version this execution already registered (a retry after the runner
        died between registering and recording it): registration happens once per
        execution."""
        group = str(arguments.get("ModelPackageGroupName"))
        for package in reversed(self.resources.registry.list_versions(group)):
            metadata = package.customer_metadata
            if metadata.get("pipeline_execution_id") == execution.execution_id:
                return package
        return None

    def stage_image_ahead(self) -> None:
        """Start staging the image in a thread now, so that it is ready (or nearly)
        when the first job starts: a caller with other work first (building the
        definition takes seconds) overlaps the two. A failure is raised by the first
        job's ``container()``, as when staging on first use.
        """
        with self._lock:
            if self._container is not None or self._staging is not None:
                return
            staging: Future[Container] = Future()
            self._staging = staging

        def stage() -> None:
            try:
                staging.set_result(
                    staged_container(
                        self.resources,
                        self._image,
                        self._dockerfile,
                        self._context,
                        self._isolation,
                    )
                )
            except BaseException as exc:  # raised again where the job asks for it
                staging.set_exception(exc)

        # not a daemon: a half-staged image is removed by its own thread, not cut off
        threading.Thread(target=stage, name="stage-image").start()

    def container(self) -> Container:
        """The image and platform jobs run under (the image staged on first use)."""
        self.stage_image_ahead()
        with self._lock:
            if self._container is None:
                assert self._staging is not None
                self._container = self._staging.result()
            return self._container

    def _property_files(
        self, step: _Step, properties: dict[str, Any]
    ) -> dict[str, Any]:
        files = {}
        outputs = properties.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for spec in step.definition.get("PropertyFiles", []):
            output = next(
                (o for o in outputs if o["OutputName"] == spec["OutputName"]), None
            )
            if output is None:
                raise DefinitionError(
                    f"property file {spec['PropertyFileName']} names an "
                    f"unknown output {spec['OutputName']!r}"
                )
            uri = join_uri(output["S3Output"]["S3Uri"], spec["FilePath"])
            try:
                files[spec["PropertyFileName"]] = json.loads(
                    self.resources.store.read_bytes(uri)
                )
            except json.JSONDecodeError as exc:
                raise DefinitionError(
                    f"property file {uri} is not JSON: {exc}"
                ) from None
        return files


class _StepFailure(Exception):
    pass


def _start_creating_tracking_store(steps: list[_Step]) -> threading.Thread | None:
    """Create the local MLflow store the training jobs name, beside the first steps.

    A tracking server exists before any job logs to it; its local stand-in is a SQLite
    file whose tables the first job to log would create. Two tuning trials creating
    them at once fail one of them ("table ... already exists"), and a first Train
    spent seconds on it; so the runner creates them, in a thread, while the steps
    before training run (the training steps wait for it).
    """
    for step in steps:
        arguments = step.definition.get("Arguments", {})
        if step.definition["Type"] == "Tuning":
            arguments = arguments.get("TrainingJobDefinition", {})
        elif step.definition["Type"] != "Training":
            continue
        environment = arguments.get("Environment", {})
        uri = environment.get("MLFLOW_TRACKING_URI")
        location = environment.get("MLFLOW_ARTIFACT_LOCATION")
        if (
            isinstance(uri, str)
            and uri.startswith("sqlite:")
            and isinstance(location, str)
        ):
            thread = threading.Thread(
                target=_create_tracking_store,
                args=(uri, location),
                name="mlflow-store",
                daemon=True,
            )
            thread.start()
            return thread
    return None


def _create_tracking_store(uri: str, location: str) -> None:
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        # its "Creating initial MLflow database tables..." is not the run's news
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        SqlAlchemyStore(uri, location)
    except Exception:  # the first job to log creates it then, as before
        logging.getLogger(__name__).warning(
            "could not create the MLflow store %s ahead of the jobs", uri, exc_info=True
        )


def staged_container(
    resources: Resources,
    image: StagedImage | None = None,
    dockerfile: Path = DOCKERFILE,
    context: Path | None = None,
    isolation: str = "auto",
) -> Container:
    """Jobs' container: ``image``, else ``dockerfile`` staged under
    ``<state>/images``, on this machine's platform for ``resources``.

    Raises:
        DefinitionError: the Dockerfile cannot be staged here.
    """
    config = resources.config
    state = config.state_dir.resolve()
    try:
        image = image or stage_image(state / "images", dockerfile, context)
    except ImageError as exc:
        raise DefinitionError(f"cannot stage the image: {exc}") from None
    platform = Platform(
        platform_variables(config),
        shared=(state,),
        region=config.aws.region,
        isolation=isolation,
    )
    return Container(image, platform)


def serve_from_image(
    resources: Resources, container: Callable[[], Container] | None = None
) -> None:
    """Have a local endpoint's server start from the staged image, as SageMaker runs
    ``docker run IMAGE serve`` (``container`` is called when a server starts).
    """
    if not isinstance(resources.endpoints, LocalEndpoints):
        return
    make = container or (lambda: staged_container(resources))

    def launch(command: list[str]) -> tuple[list[str], dict[str, str]]:
        try:
            return make().server_command(command)
        except DefinitionError as exc:
            raise EndpointError(str(exc)) from None

    resources.endpoints.server_launcher = launch


def platform_variables(config: Config) -> dict[str, str]:
    """What this machine's platform tells every job, in place of what AWS provides.

    This is the one channel between the local runner and a job besides the job's
    request; a definition never carries these keys (``stack.config.PLATFORM_KEYS``):

    - ``MLOPS_STATE_DIR``: the folder of the local stand-ins (the embedded Snowflake,
      the object store, the model registry, the MLflow store). On AWS the jobs reach
      the services themselves.
    - ``MLOPS_LOCAL_ENDPOINT__HOST`` / ``__PORT``: where the local endpoint serves
      (whatever port this run chose); on AWS, the SageMaker runtime API.
    - ``AWS_ENDPOINT_URL`` (``test`` only, from ``aws.endpoint_url``): where AWS's APIs
      answer, moto in the tests; boto3 reads it itself. With it,
      ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``: placeholder credentials for
      that stand-in, as SageMaker gives a job its execution role's credentials. The
      caller's own AWS credentials never reach a job.
    """
    variables = {
        "MLOPS_STATE_DIR": str(config.state_dir.resolve()),
        "MLOPS_LOCAL_ENDPOINT__HOST": config.local_endpoint.host,
        "MLOPS_LOCAL_ENDPOINT__PORT": str(config.local_endpoint.port),
    }
    if config.aws.endpoint_url:
        variables |= {
            "AWS_ENDPOINT_URL": config.aws.endpoint_url,
            "AWS_ACCESS_KEY_ID": "local-stand-in",
            "AWS_SECRET_ACCESS_KEY": "local-stand-in",  # noqa: S105 (not a secret)
        }
    return variables


def flatten_steps(definition: dict[str, Any]) -> list[_Step]:
    """Every step, condition branches included, with the steps each depends on."""
    flat: list[_Step] = []

    def visit(step: dict[str, Any], branch: tuple[str, bool] | None) -> None:
        arguments = step.get("Arguments", {})
        if step["Type"] == "Condition":  # its branches are steps of their own
            arguments = arguments.get("Conditions", [])
        depends = set(step.get("DependsOn", [])) | references(arguments)
        if branch is not None:
            depends.add(branch[0])
        flat.append(_Step(step, depends, branch))
        if step["Type"] == "Condition":
            for child in step["Arguments"].get("IfSteps", []):
                visit(child, (step["Name"], True))
            for child in step["Arguments"].get("ElseSteps", []):
                visit(child, (step["Name"], False))

    for step in definition.get("Steps", []):
        visit(step, None)
    names = [s.name for s in flat]
    if len(set(names)) != len(names):
        raise DefinitionError("step names in the definition are not unique")
    unknown = {d for s in flat for d in s.depends_on} - set(names)
    if unknown:
        raise DefinitionError(
            f"steps refer to unknown step(s): {', '.join(sorted(unknown))}"
        )
    _check_acyclic(flat)
    return flat


def _check_acyclic(steps: list[_Step]) -> None:
    graph = {s.name: s.depends_on for s in steps}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DefinitionError(
                f"the steps form a cycle: {' -> '.join([*path, name])}"
            )
        state[name] = 1
        for dependency in graph[name]:
            visit(dependency, [*path, name])
        state[name] = 2

    for name in graph:
        visit(name, [])


_PARAMETER_TYPES: dict[str, Callable[[Any], Any]] = {
    "String": str,
    "Integer": int,
    "Float": float,
    "Boolean": lambda v: v if isinstance(v, bool) else _boolean(str(v)),
}


def _boolean(text: str) -> bool:
    """SageMaker's spelling of a Boolean parameter's value: true or false."""
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def bind_parameters(
    definition: dict[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Defaults from the definition, overridden by ``overrides`` converted to their
    types, each checked against its domain (``pipelines.parameters``).
    """
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise DefinitionError(
            f"unknown parameter(s) {', '.join(unknown)}; the pipeline declares "
            f"{', '.join(sorted(declared)) or 'none'}"
        )
    bound = {}
    for name, spec in declared.items():
        convert = _PARAMETER_TYPES.get(spec["Type"])
        if convert is None:
            raise DefinitionError(
                f"parameter {name} has unsupported type {spec['Type']}"
            )
        if name in overrides:
            try:
                bound[name] = convert(overrides[name])
            except (TypeError, ValueError):
                raise DefinitionError(
                    f"parameter {name}={overrides[name]!r} "
                    f"is not a valid {spec['Type']}"
                ) from None
        elif "DefaultValue" in spec:
            bound[name] = spec["DefaultValue"]
        else:
            raise DefinitionError(f"parameter {name} has no default; give it a value")
    try:
        # each value in its domain, before any work; the ones given first
        check_parameters({**{k: bound[k] for k in overrides}, **bound})
    except ParameterError as exc:
        raise DefinitionError(str(exc)) from None
    return bound


def evaluate_condition(condition: dict[str, Any]) -> bool:
    """A resolved condition of SageMaker's condition types."""
    kind = condition["Type"]
    if kind == "Not":
        return not evaluate_condition(condition["Expression"])
    if kind == "Or":
        return any(evaluate_condition(c) for c in condition["Conditions"])
    if kind == "In":
        return condition["QueryValue"] in condition["Values"]
    left, right = condition["LeftValue"], condition["RightValue"]
    if kind == "Equals":
        return bool(left == right)
    try:
        left, right = float(left), float(right)
    except (TypeError, ValueError):
        raise DefinitionError(
            f"{kind} compares non-numbers {left!r} and {right!r}"
        ) from None
    comparisons = {
        "GreaterThan": left > right,
        "GreaterThanOrEqualTo": left >= right,
        "LessThan": left < right,
        "LessThanOrEqualTo": left <= right,
    }
    if kind not in comparisons:
        raise DefinitionError(f"condition type {kind!r} is not supported")
    return comparisons[kind]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
