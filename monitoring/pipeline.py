"""The monitoring pipeline: DriftCheck → CheckDrift → Retrain.

A second SageMaker pipeline, ``<sagemaker.pipeline_name>-monitor``, that an EventBridge
schedule starts (``infra/monitoring.yaml``):

- ``DriftCheck`` runs ``python -m monitoring check`` in our image and keeps its
  ``drift.json`` as the property file ``DriftReport``;
- ``CheckDrift`` goes on when the check found violations or the ``ForceRetrain``
  parameter is true (the slower schedule that lets the retraining schedule be judged
  even on days without drift);
- ``Retrain`` runs ``python -m monitoring retrain --start`` on that check's report,
  which decides by ``monitoring.*`` and starts the training pipeline with AsOfDate
  moved forward.

Its two jobs are declared next to their code (``monitoring.check.SPEC``,
``monitoring.retrain.SPEC``) and built by ``pipelines.builder`` with the training
pipeline's settings (image, role, instance type, limits, keys, network); the local
runner executes the same JSON.

  python -m monitoring pipeline [--env ENV] [--definition FILE]   print or write it
  python -m monitoring pipeline --env dev --upsert                create or update it
  python -m monitoring pipeline --run [--force-retrain]           run it here
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import stack.resources
from monitoring import check, retrain
from pipelines import arguments
from pipelines.arguments import IMAGE_URI, ROLE_ARN, STATE_DIR
from pipelines.builder import PipelineBuilder, make_session
from pipelines.console import (
    EXIT_OK,
    Console,
    UsageError,
    print_json,
    run_command,
    show_progress,
    show_step,
)
from pipelines.operations import run_local, with_git_commit
from pipelines.process_gc import run_process
from pipelines.sdk import load_sdk
from pipelines.service import LocalPipelines
from pipelines.start_requests import take_requests
from pipelines.step_names import CHECK_DRIFT, DRIFT_CHECK, DRIFT_REPORT
from pipelines.summary import verdict
from pipelines.upsert import sagemaker_pipelines
from pipelines.validation import InvalidDefinition, check_definition
from stack.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pipelines.service import PipelineService

FORCE_RETRAIN = "ForceRetrain"


def monitor_pipeline_name(config: Config) -> str:
    return f"{config.sagemaker.pipeline_name}-monitor"


def get_monitor_pipeline(config: Config, session: Any) -> Any:
    """The monitoring pipeline for ``config`` on ``session`` (a PipelineSession)."""
    sdk = load_sdk(config.aws.region)  # first: it holds the SDK's import side effects
    from sagemaker.core.workflow.conditions import ConditionGreaterThan, ConditionOr

    p_force = sdk.ParameterBoolean(FORCE_RETRAIN, default_value=False)
    build = PipelineBuilder(config, session, [p_force])
    drift_check = build.processing(check.SPEC)
    retrain_step = build.processing(retrain.SPEC)
    violations = build.report_value(DRIFT_CHECK, DRIFT_REPORT, "violations")
    check_drift = sdk.ConditionStep(
        name=CHECK_DRIFT,
        conditions=[
            ConditionOr(
                conditions=[
                    ConditionGreaterThan(left=violations, right=0),
                    sdk.ConditionEquals(left=p_force, right=True),
                ]
            )
        ],
        if_steps=[retrain_step],
        else_steps=[],
    )
    return build.pipeline(monitor_pipeline_name(config), [drift_check, check_drift])


def build_monitor_definition(
    config: Config, session: Any | None = None
) -> dict[str, Any]:
    """The monitoring pipeline's definition as a dict, checked as the main one is.

    Raises:
        InvalidDefinition: a step's request would be refused by SageMaker's API.
    """
    with stack.resources.definition_environment(config):
        session = session or make_session(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            definition = json.loads(get_monitor_pipeline(config, session).definition())
    check_definition(definition)
    return definition


def upsert_monitor_pipeline(
    config: Config, service: PipelineService, definition: dict[str, Any]
) -> tuple[str, str]:
    """CreatePipeline, or UpdatePipeline if it exists; returns (action, ARN)."""
    upserted = service.upsert(
        definition,
        name=monitor_pipeline_name(config),
        role_arn=config.execution_role,
        description=f"churn model monitoring ({config.env})",
        tags={"environment": config.env},
    )
    return upserted.action, upserted.pipeline_arn


def run_locally(config: Config, force_retrain: bool, console: Console) -> int:
    """Execute the monitoring pipeline with the local runner; returns the exit code."""
    pipelines = stack.resources.build_pipelines(config)
    if not isinstance(pipelines, LocalPipelines):
        raise ConfigError(
            f"the {config.env} environment runs on SageMaker: use --upsert, and the "
            "schedules in infra/monitoring.yaml"
        )
    definition = build_monitor_definition(config)
    runner = pipelines.runner(progress=lambda e, s, x: show_progress(console, e, s))
    execution = runner.run(
        definition,
        {FORCE_RETRAIN: str(force_retrain).lower()},
        pipeline_name=monitor_pipeline_name(config),
    )
    for step in execution.steps:
        show_step(console, step, event="step_summary", with_reason=False)
    report = execution.property_files.get(DRIFT_CHECK, {}).get(DRIFT_REPORT)
    if report is not None:
        console.event(
            "drift",
            f"Drift check: {report.get('violations')} violation(s)",
            violations=report.get("violations"),
        )
    code = verdict(execution, console)
    if code != EXIT_OK:
        return code
    return _start_requested(config, console)


def _start_requested(config: Config, console: Console) -> int:
    """Start the training executions Retrain asked for, as SageMaker would."""
    code = EXIT_OK
    for request in take_requests(config.state_dir, config.sagemaker.pipeline_name):
        console.event(
            "starting",
            f"Starting {request.pipeline_name} as Retrain asked: {request.description}",
            parameters=request.parameters,
        )
        parameters = with_git_commit(request.parameters)
        code = max(code, run_local(config, parameters, console=console))
    return code


# --- the command ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pipeline`` (for ``python -m monitoring``'s subcommand)."""
    arguments.add_environment(parser)
    parser.add_argument(
        "--definition",
        nargs="?",
        const="-",
        metavar="FILE",
        help="print the definition JSON (or write it to FILE); the default",
    )
    parser.add_argument(
        "--upsert",
        action="store_true",
        help="create or update the pipeline in SageMaker",
    )
    parser.add_argument(
        "--run",
        action="store_true",
        help="execute it here with the local runner (the embedded stack)",
    )
    parser.add_argument(
        "--force-retrain",
        action="store_true",
        help="with --run: ForceRetrain=true (Retrain runs whatever the check found)",
    )
    arguments.add_settings(parser, STATE_DIR, ROLE_ARN, IMAGE_URI)
    arguments.add_output(parser)


def run(args: argparse.Namespace) -> int:
    console = Console(args.log_format)
    return run_command(
        console,
        args.verbose,
        lambda: _command(args, console),
        (UsageError, ConfigError, InvalidDefinition),
    )


def _command(args: argparse.Namespace, console: Console) -> int:
    if sum(map(bool, (args.upsert, args.definition, args.run))) > 1:
        raise ConfigError("choose one of --definition, --upsert and --run")
    if args.force_retrain and not args.run:
        raise ConfigError("--force-retrain goes with --run")
    config = load_config(args.env, arguments.config_overrides(args))
    if args.run:
        return run_locally(config, args.force_retrain, console)
    if args.upsert:
        return _upsert(config, console)
    print_json(console, build_monitor_definition(config), args.definition or "-")
    return EXIT_OK


def _upsert(config: Config, console: Console) -> int:
    service, _ = sagemaker_pipelines(config)  # checked before the build
    definition = build_monitor_definition(config)
    action, arn = upsert_monitor_pipeline(config, service, definition)
    console.event(
        "upserted", f"{action} pipeline {arn}", action=action, pipeline_arn=arn
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring pipeline",
        description="Print or upsert the monitoring pipeline "
        "(DriftCheck → CheckDrift → Retrain).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    run_process(main)
