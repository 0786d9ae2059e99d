"""``python -m monitoring retrain``: decide whether the served model should be retrained
and, with ``--start``, start the training pipeline with its data window moved forward.

The model is retrained on a drift check's violations after the serving model was
registered, or when the data window has moved ``monitoring.retrain_every_days`` past
the serving model's as-of date, and only onto a newer as-of date; ``--force`` retrains
whatever the triggers and dates say (``monitoring.decision``). Locally ``--start`` runs
the local pipeline; on AWS it calls StartPipelineExecution, at most once a day for the
same window (``monitoring.retraining``).

Exit codes: 0 decided (started, or nothing to do); 1 the started execution failed (or
SageMaker refused to start it); 2 bad configuration or input (nothing started).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime

from monitoring.decision import DRIFT_FILE, InputError
from monitoring.retraining import RetrainRequest, retrain
from pipelines import arguments
from pipelines.console import Console, run_command
from pipelines.process_gc import run_process
from pipelines.spec import Input, ProcessingSpec, StepOutput, python_module
from pipelines.step_names import DRIFT_CHECK, RETRAIN
from processing.contract import command_config
from stack.config import ConfigError
from stack.registry import RegistryError

DRIFT_INPUT = "/opt/ml/processing/drift"

# The monitoring pipeline's step after CheckDrift: decides on DriftCheck's report and
# starts the training pipeline with AsOfDate moved forward.
SPEC = ProcessingSpec(
    name=RETRAIN,
    command=python_module("monitoring", "retrain"),
    arguments=("--start", "--drift-report", f"{DRIFT_INPUT}/{DRIFT_FILE}"),
    inputs=(Input("drift", StepOutput(DRIFT_CHECK, "monitoring"), DRIFT_INPUT),),
    sections=("resources", "aws", "sagemaker", "features", "deployment", "monitoring"),
    retried=False,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``retrain`` (for ``python -m monitoring``'s subcommand)."""
    arguments.add_environment(parser)
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
    arguments.add_local_run(parser)
    arguments.add_output(parser)


def run(args: argparse.Namespace, today: date | None = None) -> int:
    """Load the configuration, decide, start if asked; returns the exit code."""
    console = Console(args.log_format)
    request = RetrainRequest(
        start=args.start,
        force=args.force,
        drift_report=args.drift_report,
        no_writeback=args.no_writeback,
    )

    def work() -> int:
        config = command_config(args.env, arguments.config_overrides(args))
        return retrain(config, request, console, today or datetime.now(UTC).date())

    return run_command(
        console, args.verbose, work, (ConfigError, InputError, RegistryError)
    )


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
    run_process(main)
