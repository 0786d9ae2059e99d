"""``python -m monitoring retrain``: decide whether the served model should be retrained
and, with ``--start``, start the training pipeline with its data window moved forward.

The model is retrained when

- the newest drift check found violations after the serving model was registered
  (``monitoring.retrain_on_violation``), or
- the data window has moved at least ``monitoring.retrain_every_days`` days past the
  serving model's training as-of date (the schedule),

and the new as-of date, ``(monitoring.labels_through or today) -
features.label_window_days`` (the newest date whose labels are complete), is after the
serving model's. ``--force`` retrains whatever the triggers and dates say.

The serving model is the package behind the endpoint, else the newest Approved version
of the model package group; its as-of date comes from the package's customer metadata,
which the pipeline's Register step writes. Locally ``--start`` runs the local pipeline
as ``python -m pipelines.run --param AsOfDate=...`` does; on AWS it calls
StartPipelineExecution with a request token that makes a second start on the same day
for the same window return the same execution instead of a new one.

Exit codes: 0 decided (started, or nothing to do); 1 the started execution failed (or
SageMaker refused to start it); 2 bad configuration or input (nothing started).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.console import FORMATS, Console, UsageError, fail, is_unreachable
from pipelines.operations import git_commit, run_local
from processing.contract import ProcessingContract, command_config
from stack.config import Config, ConfigError, MonitoringConfig
from stack.objectstore import ObjectStore, ObjectStoreError
from stack.registry import ModelPackage, RegistryError

if TYPE_CHECKING:
    from pipelines.service import PipelineService

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DRIFT_FILE = "drift.json"
VIOLATION, SCHEDULE, FORCED = "violation", "schedule", "force"


class InputError(Exception):
    """A model, drift report or argument that cannot be used; nothing was started."""


@dataclass(frozen=True)
class ServingModel:
    """The model the endpoint serves (or would serve), with its training window."""

    arn: str
    version: int
    registered_at: datetime
    as_of: date
    label_window_days: int | None
    found_by: str  # "endpoint" or "registry"


@dataclass(frozen=True)
class DriftReport:
    """The parts of a drift check's ``drift.json`` the decision reads."""

    uri: str
    checked_at: datetime
    violations: int
    model_package_arn: str | None = None


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    as_of: date  # the AsOfDate a new execution trains on
    triggers: tuple[str, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)


# --- the decision (pure) --------------------------------------------------------------


def new_as_of(labels_through: date, label_window_days: int) -> date:
    """The newest as-of date whose label window has ended by ``labels_through``."""
    return labels_through - timedelta(days=label_window_days)


def decide(
    model: ServingModel | None,
    drift: DriftReport | None,
    settings: MonitoringConfig,
    label_window_days: int,
    today: date,
    force: bool = False,
) -> Decision:
    """Whether to retrain, why, and on which window; reads nothing, starts nothing."""
    reference = settings.labels_through or today
    as_of = new_as_of(reference, label_window_days)
    parameters = {
        "AsOfDate": as_of.isoformat(),
        "LabelWindowDays": str(label_window_days),
    }
    window = (
        f"labels complete through {reference} "
        f"({'monitoring.labels_through' if settings.labels_through else 'today'}), "
        f"a {label_window_days}-day label window: AsOfDate {as_of}"
    )
    if model is None:
        if force:
            reason = f"forced (--force), no model serves yet; {window}"
            return Decision(True, reason, as_of, (FORCED,), parameters)
        return Decision(
            False,
            "no model serves the endpoint and the group has no Approved version: "
            "nothing to retrain (run the pipeline first, or pass --force)",
            as_of,
        )
    triggers: list[str] = []
    reasons: list[str] = []
    if force:
        triggers.append(FORCED)
        reasons.append("forced (--force)")
    reasons.append(_violation_reason(model, drift, settings, triggers))
    reasons.append(_schedule_reason(model, as_of, settings, triggers))
    said = "; ".join(r for r in reasons if r)
    if not triggers:
        return Decision(False, f"nothing to do: {said}", as_of)
    if as_of <= model.as_of and not force:
        return Decision(
            False,
            f"nothing to do: {said}; but {window}, which is not after version "
            f"{model.version}'s as-of date {model.as_of}: no newer labels to learn "
            "from (--force retrains anyway)",
            as_of,
            tuple(triggers),
        )
    return Decision(True, f"{said}; {window}", as_of, tuple(triggers), parameters)


def _violation_reason(
    model: ServingModel,
    drift: DriftReport | None,
    settings: MonitoringConfig,
    triggers: list[str],
) -> str:
    if drift is None:
        return "no drift check has run yet"
    if drift.violations <= 0:
        return f"the newest drift check ({_when(drift.checked_at)}) found no violation"
    found = (
        f"the drift check at {_when(drift.checked_at)} found "
        f"{drift.violations} violation(s)"
    )
    if drift.checked_at <= model.registered_at:
        return (
            f"{found}, before version {model.version} was registered "
            f"({_when(model.registered_at)})"
        )
    if not settings.retrain_on_violation:
        return f"{found}, but monitoring.retrain_on_violation is off"
    triggers.append(VIOLATION)
    return (
        f"{found} after version {model.version} was registered "
        f"({_when(model.registered_at)})"
    )


def _schedule_reason(
    model: ServingModel, as_of: date, settings: MonitoringConfig, triggers: list[str]
) -> str:
    every = settings.retrain_every_days
    if every is None:
        return "no retraining schedule (monitoring.retrain_every_days is unset)"
    moved = (as_of - model.as_of).days
    if moved >= every:
        triggers.append(SCHEDULE)
        return (
            f"schedule: the data window has moved {moved} days past version "
            f"{model.version}'s as-of date {model.as_of} "
            f"(monitoring.retrain_every_days is {every})"
        )
    return (
        f"the schedule is not due: the data window has moved {moved} of {every} days "
        f"past version {model.version}'s as-of date {model.as_of}"
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what the decision reads ----------------------------------------------------------


def serving_model(resources: Any) -> ServingModel | None:
    """The package the endpoint serves, else the group's newest Approved version."""
    config = resources.config
    found_by = "endpoint"
    arn = resources.endpoints.serving_package(config.sagemaker.endpoint_name)
    package: ModelPackage | None
    if arn:
        package = resources.registry.get(arn)
    else:
        found_by = "registry"
        package = resources.registry.latest_approved(
            config.sagemaker.model_package_group
        )
    return None if package is None else model_of(package, found_by)


def model_of(package: ModelPackage, found_by: str) -> ServingModel:
    """The training window recorded on ``package``; InputError if it has none."""
    metadata = package.customer_metadata
    text = metadata.get("as_of_date", "")
    try:
        as_of = date.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"model package {package.arn} has no as_of_date in its customer metadata "
            f"(got {text!r}): it was not registered by this pipeline; retrain with "
            "--force, or pass AsOfDate to python -m pipelines.run yourself"
        ) from None
    window = metadata.get("label_window_days", "")
    return ServingModel(
        arn=package.arn,
        version=package.version,
        registered_at=_timestamp(package.created_at, f"{package.arn} created_at"),
        as_of=as_of,
        label_window_days=int(window) if window.isdigit() else None,
        found_by=found_by,
    )


def newest_drift(store: ObjectStore, prefix: str) -> DriftReport | None:
    """The newest ``<prefix>/<check>/drift.json`` (folders are named by check time)."""
    depth = prefix.rstrip("/").count("/") + 2
    reports = [
        uri
        for uri in store.list(prefix.rstrip("/") + "/")
        if uri.endswith("/" + DRIFT_FILE) and uri.count("/") == depth
    ]
    return read_drift(store, max(reports)) if reports else None


def read_drift(store: ObjectStore, uri: str) -> DriftReport:
    """One ``drift.json``; InputError naming the file if it is not one."""
    try:
        data = json.loads(store.read_bytes(uri))
    except ObjectStoreError as exc:
        raise InputError(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{uri} is not JSON: {exc}") from None
    return drift_from(data, uri)


def drift_from(data: Any, uri: str) -> DriftReport:
    if not isinstance(data, dict):
        raise InputError(f"{uri}: a drift report is a JSON object")
    violations = data.get("violations")
    if isinstance(violations, bool) or not isinstance(violations, int):
        raise InputError(
            f"{uri}: 'violations' must be a whole number, got {violations!r}"
        )
    checked_at = _timestamp(data.get("checked_at"), f"{uri} checked_at")
    return DriftReport(uri, checked_at, violations, data.get("model_package_arn"))


def _timestamp(value: Any, what: str) -> datetime:
    """An ISO 8601 time; UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what}: {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- starting the execution -----------------------------------------------------------


def request_token(pipeline_name: str, parameters: dict[str, str], day: date) -> str:
    """The same token for the same pipeline, parameters and day: SageMaker then starts
    at most one execution for them (StartPipelineExecution is idempotent on it).
    """
    key = json.dumps([pipeline_name, parameters, day.isoformat()], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def start_locally(
    config: Config, decision: Decision, console: Console, today: date
) -> int:
    """The local pipeline run ``python -m pipelines.run --param AsOfDate=...`` makes.

    Inside a job of the local monitoring pipeline, a start request instead
    (``pipelines.start_requests``): the runner of that pipeline starts it, as the
    service does for StartPipelineExecution on SageMaker.
    """
    from pipelines.start_requests import StartRequest, request_start

    if ProcessingContract.from_environment().in_job:
        pipeline = config.sagemaker.pipeline_name
        where = request_start(
            config.state_dir,
            StartRequest(
                pipeline,
                dict(decision.parameters),
                decision.reason,
                request_token(pipeline, decision.parameters, today),
            ),
        )
        console.event(
            "requested",
            f"Asked the local runner to start {pipeline} ({where.name})",
            parameters=decision.parameters,
        )
        return EXIT_OK

    parameters = dict(decision.parameters)
    commit = git_commit()
    if commit != "unknown":
        parameters["GitCommit"] = commit
    try:
        return run_local(config, parameters, console=console)
    except UsageError as exc:
        raise InputError(str(exc)) from None


# --- the command ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``retrain`` (for ``python -m monitoring``'s subcommand)."""
    parser.add_argument("--env", help="local (default), test, dev, staging or prod")
    parser.add_argument(
        "--start",
        action="store_true",
        help="start the training pipeline when the decision is to retrain "
        "(locally: run it here; on AWS: StartPipelineExecution)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="retrain whatever the drift checks and dates say",
    )
    parser.add_argument(
        "--drift-report",
        metavar="PATH|URI",
        help="decide on this drift.json instead of the newest under "
        "<artifact_root>/monitoring/<endpoint> (the monitoring pipeline passes its "
        "own check's report)",
    )
    parser.add_argument(
        "--no-writeback",
        action="store_true",
        help="a local run skips the WriteBack step (WriteBack=false)",
    )
    local = parser.add_argument_group("local run")
    local.add_argument("--customers", type=int, help="demo data size (demo.customers)")
    local.add_argument("--state-dir", help="where the embedded stack keeps its state")
    local.add_argument(
        "--port", type=int, help="local endpoint port (local_endpoint.port)"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text for people (default), json lines for CD logs",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "demo.customers": args.customers,
        "state_dir": args.state_dir,
        "local_endpoint.port": args.port,
    }


def run(args: argparse.Namespace, today: date | None = None) -> int:
    """Load the configuration, decide, start if asked; returns the exit code."""
    console = Console(args.log_format)
    try:
        config = command_config(args.env, overrides(args))
        return retrain(config, args, console, today or datetime.now(UTC).date())
    except (ConfigError, InputError, RegistryError) as exc:
        return fail(console, EXIT_USAGE, str(exc), args.verbose)
    except KeyboardInterrupt:
        console.error("interrupted: the execution was stopped")
        return 130
    except Exception as exc:  # the last line of defence: one line, a non-zero exit
        if is_unreachable(exc):
            return fail(console, EXIT_USAGE, str(exc), args.verbose)
        return fail(console, EXIT_FAILED, f"{type(exc).__name__}: {exc}", args.verbose)


def retrain(
    config: Config, args: argparse.Namespace, console: Console, today: date
) -> int:
    from stack.resources import build_resources

    resources = build_resources(config)
    model = serving_model(resources)
    if args.drift_report:
        drift: DriftReport | None = _read_given_report(
            resources.store, args.drift_report
        )
    else:
        from monitoring.check import results_prefix  # (numpy, pandas: only here)

        drift = newest_drift(resources.store, results_prefix(config))
    decision = decide(
        model,
        drift,
        config.monitoring,
        config.features.label_window_days,
        today,
        force=args.force,
    )
    pipelines = resources.pipelines
    if args.no_writeback and decision.retrain and pipelines.runs_here:
        decision = replace(
            decision, parameters={**decision.parameters, "WriteBack": "false"}
        )
    _report(console, config, model, drift, decision)
    if not decision.retrain:
        return EXIT_OK
    if not args.start:
        console.event(
            "not_started",
            "Not started (pass --start to start the pipeline)",
            parameters=decision.parameters,
        )
        return EXIT_OK
    if not pipelines.runs_here:
        return _start_remote(config, pipelines, decision, console, today)
    console.event(
        "starting",
        f"Starting the local pipeline with AsOfDate={decision.as_of}",
        parameters=decision.parameters,
    )
    return start_locally(config, decision, console, today)


def _read_given_report(store: ObjectStore, where: str) -> DriftReport:
    if where.startswith("s3://"):
        return read_drift(store, where)
    path = Path(where)
    if where.startswith("/opt/ml/"):  # a pipeline step's input, under the contract
        from processing.contract import ProcessingContract

        path = ProcessingContract.from_environment().path(where)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"--drift-report {where}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where} is not JSON: {exc}") from None
    return drift_from(data, str(path))


def _report(
    console: Console,
    config: Config,
    model: ServingModel | None,
    drift: DriftReport | None,
    decision: Decision,
) -> None:
    if model:
        window = model.label_window_days
        console.event(
            "model",
            f"Serving model: version {model.version} ({model.arn}, found by "
            f"{model.found_by}), as-of date {model.as_of}"
            + (f", {window}-day label window" if window else "")
            + f", registered {_when(model.registered_at)}",
            model_package_arn=model.arn,
            version=model.version,
            as_of=model.as_of.isoformat(),
            registered_at=_when(model.registered_at),
        )
        if window and window != config.features.label_window_days:
            console.note(
                f"version {model.version} was trained with a {window}-day label "
                f"window; features.label_window_days is "
                f"{config.features.label_window_days} now"
            )
    if drift:
        console.event(
            "drift",
            f"Drift check: {drift.uri} ({_when(drift.checked_at)}, "
            f"{drift.violations} violation(s))",
            drift_report=drift.uri,
            checked_at=_when(drift.checked_at),
            violations=drift.violations,
        )
    verdict = "Retrain" if decision.retrain else "No retraining"
    console.event(
        "decision",
        f"{verdict}: {decision.reason}",
        retrain=decision.retrain,
        triggers=list(decision.triggers),
        as_of=decision.as_of.isoformat(),
        reason=decision.reason,
    )


def _start_remote(
    config: Config,
    pipelines: PipelineService,
    decision: Decision,
    console: Console,
    today: date,
) -> int:
    """StartPipelineExecution on the training pipeline, which runs elsewhere."""
    from pipelines.parameters import ParameterError, check_parameters
    from pipelines.service import PipelineRefused, PipelineServiceError

    try:
        check_parameters(decision.parameters)  # before SageMaker starts any job
    except ParameterError as exc:
        raise InputError(str(exc)) from None
    pipelines.check_access()
    pipeline = config.sagemaker.pipeline_name
    try:
        arn = pipelines.start(
            pipeline,
            dict(sorted(decision.parameters.items())),
            display_name=f"retrain-{decision.as_of.isoformat()}",
            description=decision.reason,
            token=request_token(pipeline, decision.parameters, today),
        )
    except (LookupError, PipelineRefused) as exc:
        raise InputError(
            f"{exc} (create it first: python -m pipelines.run --env "
            f"{config.env} --upsert)"
        ) from None
    except PipelineServiceError as exc:
        console.error(str(exc), exit_code=EXIT_FAILED)
        return EXIT_FAILED
    console.event(
        "started",
        f"Started execution {arn} of {pipeline} with "
        + ", ".join(f"{k}={v}" for k, v in sorted(decision.parameters.items())),
        execution_arn=arn,
        parameters=decision.parameters,
    )
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m monitoring retrain",
        description="Decide whether to retrain the served model; --start starts the "
        "training pipeline with the data window moved forward.",
    )
    add_arguments(result)
    return result


def main(argv: Sequence[str] | None = None, today: date | None = None) -> int:
    return run(parser().parse_args(argv), today)


if __name__ == "__main__":
    sys.exit(main())
