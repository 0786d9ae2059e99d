"""Running the training pipeline on this machine: the whole loop that
``python -m pipelines.run`` runs, and that a retraining starts locally.

``run_local`` checks what can be checked before any work (the parameters, the feature
set, the endpoint's port), seeds the demo data, runs the definition with the local
runner, holding the state folder from the seeding to the last step, and prints the
summary. The definition (the SageMaker SDK), the feature set and the demo data (pandas)
are imported when a run needs them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import stack.resources
from pipelines.console import Console, UsageError, show_progress
from pipelines.local_runner import (
    DefinitionError,
    LocalRunner,
    StateBusy,
    bind_parameters,
)
from pipelines.parameters import PARAMETERS, ParameterError, check_parameters
from pipelines.service import LocalPipelines
from pipelines.summary import summarise, verdict
from stack.config import Config
from stack.endpoints import EndpointError, LocalEndpoints
from stack.resources import Resources

if TYPE_CHECKING:
    from datagen.seed import SeedResult

UNKNOWN_COMMIT = "unknown"


def git_commit() -> str:
    """The commit of the code this runs (``-dirty`` with uncommitted changes), or
    ``unknown`` outside a git checkout; models and MLflow runs carry it.
    """
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *argv],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    return f"{commit}-dirty" if dirty else commit


def with_git_commit(parameters: Mapping[str, str]) -> dict[str, str]:
    """``parameters`` with GitCommit set to the code's commit, when it is known and
    not given already.
    """
    given = dict(parameters)
    commit = git_commit()
    if commit != UNKNOWN_COMMIT:
        given.setdefault("GitCommit", commit)
    return given


def run_local(
    config: Config, parameters: dict[str, str], console: Console | None = None
) -> int:
    """The whole loop on this machine; returns the exit code.

    Raises:
        UsageError: the environment runs on SageMaker, a parameter or the feature set
            is refused, the endpoint's port is taken, or another run holds the state
            folder; no step has run (the demo data may have been checked).
    """
    console = console or Console()
    started = time.monotonic()
    from features import SchemaError, load_feature_set  # pandas
    from pipelines.definition import build_definition  # pandas; the SDK to build

    pipelines = stack.resources.build_pipelines(config)
    if not isinstance(pipelines, LocalPipelines):
        raise UsageError(
            f"the {config.env} environment runs on SageMaker: use --upsert [--start]"
        )
    resources = pipelines.resources
    runner = pipelines.runner(progress=lambda e, s, x: show_progress(console, e, s))
    try:
        load_feature_set(config.features.feature_set, config.features.directory)
    except SchemaError as exc:
        raise UsageError(str(exc)) from None
    # a parameter refused here is refused by the binding below, before any work
    ahead = _nothing_to_refuse(parameters)
    approval = config.sagemaker.model_approval_status  # the parameter's default
    if ahead and parameters.get("ModelApprovalStatus", approval) == "Approved":
        _check_endpoint_port(config, resources)  # before the demo data's check starts
    try:
        with contextlib.ExitStack() as held:
            if ahead:  # all three while the SDK builds the definition
                demo_data = _hold_state(held, runner, config)
                runner.stage_image_ahead()
                demo_data.start()
            definition = build_definition(config)
            try:
                bound = bind_parameters(definition, parameters)
            except DefinitionError as exc:
                raise UsageError(str(exc)) from None
            if not ahead:
                demo_data = _hold_state(held, runner, config)
            if bound.get("ModelApprovalStatus") == "Approved":
                _check_endpoint_port(config, resources)
            console.event(
                "environment",
                f"Environment {config.env}: state in {config.state_dir.resolve()}",
                env=config.env,
                state_dir=str(config.state_dir.resolve()),
            )
            _report_demo_data(demo_data.result(), console)
            console.event(
                "definition",
                f"Running the pipeline definition ({len(json.dumps(definition)):,} "
                "bytes) locally",
            )
            execution = runner.run(definition, parameters)
    except StateBusy as exc:
        raise UsageError(str(exc)) from None
    summarise(config, execution, time.monotonic() - started, console, resources.store)
    return verdict(execution, console)


def _hold_state(
    held: contextlib.ExitStack, runner: LocalRunner, config: Config
) -> _DemoData:
    """Hold the state folder for this run (one runner per folder, from the demo data
    to the last step) and its demo data's check, both until ``held`` closes."""
    held.enter_context(runner.exclusive())
    return held.enter_context(_DemoData(config))


def _nothing_to_refuse(parameters: dict[str, str]) -> bool:
    """Whether ``parameters`` pass what can be checked before the definition is
    built: known names, values in their domains.
    """
    try:
        check_parameters(parameters)
    except ParameterError:
        return False
    return set(parameters) <= set(PARAMETERS)


class _DemoData:
    """The demo data, checked (and seeded the first time) in a process of its own.

    Started while the SDK builds the definition, so the check, which loads the
    embedded Snowflake (fakesnow on DuckDB), overlaps the build, and this process never
    loads DuckDB: its exit can then skip the last garbage collections of the SDK's
    heap (``pipelines.process_gc``; 1.7 s). Not started, the demo data is seeded
    here when asked for. Leaving the block waits for a started check: a seed is never
    left half-written by a run that stopped early (and the marker row, written last,
    makes an interrupted one start again in full).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._pool: ProcessPoolExecutor | None = None
        self._seed: Future[SeedResult] | None = None

    def __enter__(self) -> _DemoData:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def start(self) -> None:
        # spawn, not fork: the runner's staging thread is running by now
        self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        self._seed = self._pool.submit(ensure_demo_data_of, self.config)

    def result(self) -> SeedResult:
        if self._seed is None or self._pool is None:
            return ensure_demo_data_of(self.config)
        seed = self._seed.result()
        self._pool.shutdown(wait=False)  # its process ends beside the first steps
        return seed


def ensure_demo_data_of(config: Config) -> SeedResult:
    """The demo data of ``config``'s embedded Snowflake, seeded unless already there."""
    from datagen.seed import ensure_demo_data  # pandas, fakesnow

    warehouse = stack.resources.build_resources(config).warehouse
    return ensure_demo_data(warehouse, config.demo.customers, config.demo.seed)


def _report_demo_data(seed: SeedResult, console: Console) -> None:
    verb = "Seeded" if seed.created else "Found"
    console.event(
        "demo_data",
        f"{verb} demo data in Snowflake: "
        + ", ".join(f"{name} {rows:,}" for name, rows in seed.rows.items()),
        created=seed.created,
        rows=seed.rows,
    )


def _check_endpoint_port(config: Config, resources: Resources) -> None:
    """A local endpoint's port taken by another program stops the run before its
    first step (not at Deploy, a minute later).
    """
    if not isinstance(resources.endpoints, LocalEndpoints):
        return
    try:
        resources.endpoints.check_port(config.sagemaker.endpoint_name)
    except EndpointError as exc:
        raise UsageError(f"{exc}; or pass --port") from None
