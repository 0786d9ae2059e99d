"""Retraining as a service: read the serving model and a drift report, decide
(``monitoring.decision``), say why, and start the training pipeline when asked.

Locally the start runs the local pipeline as ``python -m pipelines.run --param
AsOfDate=...`` does; inside a job of the local monitoring pipeline it leaves a start
request for that pipeline's runner instead; on AWS it calls StartPipelineExecution with
a request token that makes a second start on the same day for the same window return
the same execution instead of a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import stack.resources
from monitoring.decision import (
    Decision,
    DriftReport,
    InputError,
    ServingModel,
    decide,
    drift_from,
    iso_utc,
    newest_drift,
    read_drift,
    results_prefix,
    serving_model,
)
from pipelines.console import EXIT_FAILED, EXIT_OK, Console, UsageError
from pipelines.operations import run_local, with_git_commit
from pipelines.parameters import ParameterError, check_parameters
from pipelines.service import PipelineRefused, PipelineService, PipelineServiceError
from pipelines.start_requests import StartRequest, request_start
from processing.contract import ProcessingContract
from stack.config import Config
from stack.objectstore import ObjectStore


@dataclass(frozen=True)
class RetrainRequest:
    """What ``python -m monitoring retrain`` was asked: ``start`` the pipeline when the
    decision is to retrain, ``force`` it, decide on the ``drift_report`` given (a path
    or URI; else the newest), and ``no_writeback`` for a local run.
    """

    start: bool = False
    force: bool = False
    drift_report: str | None = None
    no_writeback: bool = False


def retrain(
    config: Config, request: RetrainRequest, console: Console, today: date
) -> int:
    """Decide, say why, start if asked; returns the exit code.

    Raises:
        InputError: the serving model or the drift report cannot be used, or the
            pipeline to start does not exist; nothing was started.
    """
    resources = stack.resources.build_resources(config)
    model = serving_model(resources)
    if request.drift_report:
        drift: DriftReport | None = _read_given_report(
            resources.store, request.drift_report
        )
    else:
        drift = newest_drift(resources.store, results_prefix(config))
    decision = decide(
        model,
        drift,
        config.monitoring,
        config.features.label_window_days,
        today,
        force=request.force,
    )
    pipelines = resources.pipelines
    if request.no_writeback and decision.retrain and pipelines.runs_here:
        decision = replace(
            decision, parameters={**decision.parameters, "WriteBack": "false"}
        )
    _report(console, config, model, drift, decision)
    if not decision.retrain:
        return EXIT_OK
    if not request.start:
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
    try:
        return run_local(config, with_git_commit(decision.parameters), console=console)
    except UsageError as exc:
        raise InputError(str(exc)) from None


def _read_given_report(store: ObjectStore, where: str) -> DriftReport:
    if where.startswith("s3://"):
        return read_drift(store, where)
    path = Path(where)
    if where.startswith("/opt/ml/"):  # a pipeline step's input, under the contract
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
            + f", registered {iso_utc(model.registered_at)}",
            model_package_arn=model.arn,
            version=model.version,
            as_of=model.as_of.isoformat(),
            registered_at=iso_utc(model.registered_at),
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
            f"Drift check: {drift.uri} ({iso_utc(drift.checked_at)}, "
            f"{drift.violations} violation(s))",
            drift_report=drift.uri,
            checked_at=iso_utc(drift.checked_at),
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
