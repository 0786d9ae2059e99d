"""Running the training pipeline on this machine: the whole loop that
``python -m pipelines.run`` runs, and that a retraining starts locally.

``run_local`` checks what can be checked before any work (the parameters, the feature
set, the endpoint's port), seeds the demo data, runs the definition with the local
runner, holding the state folder from the seeding to the last step, and prints the
summary. The definition (the SageMaker SDK), the feature set and the demo data (pandas)
are imported when a run needs them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import stack.resources
from pipelines.console import Console, UsageError, show_progress
from pipelines.local_runner import DefinitionError, StateBusy, bind_parameters
from pipelines.parameters import PARAMETERS, ParameterError, check_parameters
from pipelines.service import LocalPipelines
from pipelines.summary import summarise, verdict
from stack.config import Config
from stack.endpoints import EndpointError, LocalEndpoints
from stack.resources import Resources

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
            folder; nothing has run.
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
    if _nothing_to_refuse(parameters):  # else the binding below exits 2 first
        runner.stage_image_ahead()  # while the SDK builds the definition
    definition = build_definition(config)
    try:
        bound = bind_parameters(definition, parameters)  # fail before any work
        load_feature_set(config.features.feature_set, config.features.directory)
    except (DefinitionError, SchemaError) as exc:
        raise UsageError(str(exc)) from None
    if bound.get("ModelApprovalStatus") == "Approved":
        _check_endpoint_port(config, resources)
    console.event(
        "environment",
        f"Environment {config.env}: state in {config.state_dir.resolve()}",
        env=config.env,
        state_dir=str(config.state_dir.resolve()),
    )
    try:
        # one runner per state folder, held from the demo data to the last step
        with runner.exclusive():
            _seed_demo_data(config, resources, console)
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


def _nothing_to_refuse(parameters: dict[str, str]) -> bool:
    """Whether ``parameters`` pass what can be checked before the definition is
    built: known names, values in their domains.
    """
    try:
        check_parameters(parameters)
    except ParameterError:
        return False
    return set(parameters) <= set(PARAMETERS)


def _seed_demo_data(config: Config, resources: Resources, console: Console) -> None:
    from datagen.seed import ensure_demo_data  # pandas

    seed = ensure_demo_data(
        resources.warehouse, config.demo.customers, config.demo.seed
    )
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
