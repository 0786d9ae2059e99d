"""``python -m pipelines.executions``: the history of pipeline executions.

  python -m pipelines.executions list [--limit N]     newest first
  python -m pipelines.executions describe ID          steps, statuses, durations,
                                                      failure reasons
  python -m pipelines.executions retry ID [--wait]    rerun a failed execution from the
                                                      steps that did not succeed

The local environment reads the runner's records in ``<state>/executions``; dev,
staging and prod ask SageMaker (ID is then the execution ARN). Exit codes as in
``pipelines.run``: 0 done, 1 the retried execution failed, 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipelines.console import (
    ENV_OPTION,
    LOG_FORMAT_OPTION,
    STATE_DIR_OPTION,
    Console,
    add_global_options,
    show_progress,
    show_step,
)
from stack.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.executions",
        description="List, describe and retry pipeline executions.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="executions, newest first")
    listing.add_argument("--limit", type=int, default=20)
    describe = commands.add_parser("describe", help="one execution and its steps")
    describe.add_argument("execution", help="execution id (local) or ARN (SageMaker)")
    retry = commands.add_parser("retry", help="rerun a Failed or Stopped execution")
    retry.add_argument("execution", help="execution id (local) or ARN (SageMaker)")
    retry.add_argument(
        "--wait",
        action="store_true",
        help="on SageMaker, wait for the retried execution (local retries always do)",
    )
    add_global_options(
        parser,
        (listing, describe, retry),
        (ENV_OPTION, STATE_DIR_OPTION, LOG_FORMAT_OPTION),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(args.log_format)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
        if config.is_aws:
            return _on_sagemaker(config, args, console)
        return _local(config, args, console)
    except (ConfigError, LookupError, ValueError) as exc:
        console.error(str(exc).strip("'\""), exit_code=EXIT_USAGE)
        return EXIT_USAGE


def _local(config: Config, args: argparse.Namespace, console: Console) -> int:
    from pipelines.local_runner import DefinitionError, Execution

    root = config.state_dir.resolve() / "executions"
    if args.command == "list":
        records = [
            Execution.load(path.parent) for path in root.glob("*/execution.json")
        ]
        records.sort(key=lambda e: e.started_at, reverse=True)
        for execution in records[: args.limit]:
            failed = execution.failed_step
            _show_summary(
                console,
                execution.execution_id,
                execution.status,
                execution.started_at,
                seconds_between(execution.started_at, execution.ended_at),
                failed.name if failed else None,
                execution.attempts,
                failed.failure_reason if failed else execution.failure_reason,
            )
        if not records:
            console.note(f"no executions in {root}")
        return EXIT_OK
    directory = root / args.execution
    if not (directory / "execution.json").exists():
        raise LookupError(f"no execution {args.execution} in {root}")
    if args.command == "describe":
        _describe_local(console, Execution.load(directory))
        return EXIT_OK
    from pipelines.local_runner import LocalRunner
    from stack.resources import build_resources

    runner = LocalRunner(
        build_resources(config), progress=lambda e, s, x: show_progress(console, e, s)
    )
    try:
        execution = runner.retry(args.execution)
    except DefinitionError as exc:
        raise ValueError(str(exc)) from None
    _describe_local(console, execution)
    return EXIT_OK if execution.status == "Succeeded" else EXIT_FAILED


def _show_summary(
    console: Console,
    execution: str,
    status: str,
    started: str | None,
    duration: float | None,
    failed_step: str | None,
    attempts: int = 1,
    reason: str | None = None,
) -> None:
    """One line per execution: id, status, start, duration, the step that failed and
    why (its first 60 characters)."""
    shown = f"{duration:7.1f}s" if duration is not None else " " * 8
    failed = f"  failed at {failed_step}" if failed_step else ""
    if reason:
        failed += f": {reason[:60]}{'...' * (len(reason) > 60)}"
    retried = f"  (attempt {attempts})" if attempts > 1 else ""
    console.event(
        "execution",
        f"{execution}  {status:<10}  {started}  {shown}{failed}{retried}",
        execution=execution,
        status=status,
        started_at=started,
        duration_seconds=duration,
        failed_step=failed_step,
        failure_reason=reason,
        attempts=attempts,
    )


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO 8601 instant to another; None if either is missing."""
    if not (start and end):
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _describe_local(console: Console, execution: Any) -> None:
    console.event(
        "execution",
        f"Execution {execution.execution_id} of {execution.pipeline_name}: "
        f"{execution.status} (started {execution.started_at}, "
        f"ended {execution.ended_at or '-'}, attempt {execution.attempts})",
        execution=execution.execution_id,
        status=execution.status,
        parameters=execution.parameters,
    )
    console.event(
        "parameters",
        "Parameters: " + json.dumps(execution.parameters, sort_keys=True),
        parameters=execution.parameters,
    )
    for step in execution.steps:
        show_step(console, step)


def _on_sagemaker(config: Config, args: argparse.Namespace, console: Console) -> int:
    from pipelines import remote

    client = remote.sagemaker_client(config)
    if args.command == "list":
        for item in remote.list_executions(
            client, config.sagemaker.pipeline_name, args.limit
        ):
            # the listing has neither end times nor steps: each execution's steps do
            status = remote.describe_execution(client, item["execution"])
            failed = status.failed_step
            _show_summary(
                console,
                item["execution"],
                status.status,
                item["started_at"],
                _remote_duration(status),
                failed.name if failed else None,
            )
        return EXIT_OK
    if args.command == "describe":
        _describe_remote(console, remote.describe_execution(client, args.execution))
        return EXIT_OK
    arn = remote.retry_execution(client, args.execution)
    console.event("retried", f"retried execution {arn}", execution_arn=arn)
    if not args.wait:
        return EXIT_OK
    final = remote.wait_for_execution(client, arn, timeout_seconds=4 * 3600)
    _describe_remote(console, final)
    return EXIT_OK if final.status == "Succeeded" else EXIT_FAILED


def _remote_duration(status: Any) -> float | None:
    """From the start to the last step's end, once the execution has ended."""
    from pipelines.remote import TERMINAL

    ends = [step.ended_at for step in status.steps if step.ended_at]
    if status.status not in TERMINAL or not ends:
        return None
    return seconds_between(status.started_at, max(ends, key=datetime.fromisoformat))


def _describe_remote(console: Console, status: Any) -> None:
    console.event(
        "execution",
        f"Execution {status.arn}: {status.status} (started {status.started_at})",
        execution=status.arn,
        status=status.status,
    )
    for step in status.steps:
        show_step(console, step)


if __name__ == "__main__":
    sys.exit(main())
