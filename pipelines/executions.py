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
from collections.abc import Sequence
from typing import Any

import stack.resources
from pipelines.arguments import (
    ENV_OPTION,
    LOG_FORMAT_OPTION,
    STATE_DIR_OPTION,
    add_global_options,
)
from pipelines.console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Console,
    show_progress,
    show_step,
)
from pipelines.process_gc import run_process
from pipelines.service import ExecutionStatus, PipelineService, PipelineServiceError
from stack.config import ConfigError, load_config


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
        service = stack.resources.build_pipelines(config)
        service.check_access()
        if args.command == "list":
            return _list(service, args.limit, console)
        if args.command == "describe":
            _describe(console, service.describe(args.execution))
            return EXIT_OK
        return _retry(service, args.execution, args.wait, console)
    except (ConfigError, LookupError, ValueError) as exc:
        console.error(str(exc).strip("'\""), exit_code=EXIT_USAGE)
        return EXIT_USAGE
    except PipelineServiceError as exc:  # e.g. SageMaker throttling the requests
        console.error(str(exc), exit_code=EXIT_FAILED)
        return EXIT_FAILED


def _list(service: PipelineService, limit: int, console: Console) -> int:
    listed = service.list(limit)
    for item in listed:
        # a listing may have neither end times nor steps: the execution's have them
        status = item if item.steps else service.describe(item.execution_id)
        failed = status.failed_step
        _show_summary(
            console,
            item.execution_id,
            status.status,
            item.started_at,
            status.duration_seconds,
            failed.name if failed else None,
            status.attempts or 1,
            failed.failure_reason if failed else status.failure_reason,
        )
    if listed.unreadable:
        console.note(f"{listed.unreadable} unreadable record(s) in {service.where}")
    if not listed:
        console.note(f"no executions in {service.where}")
    return EXIT_OK


def _retry(
    service: PipelineService, execution: str, wait: bool, console: Console
) -> int:
    retried = service.retry(
        execution, progress=lambda e, s, x: show_progress(console, e, s)
    )
    console.event("retried", f"retried execution {retried}", execution_arn=retried)
    if not (wait or service.runs_here):  # a local retry has ended already
        return EXIT_OK
    final = service.wait(retried, timeout_seconds=4 * 3600)
    _describe(console, final)
    return EXIT_OK if final.status == "Succeeded" else EXIT_FAILED


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


def _describe(console: Console, status: ExecutionStatus) -> None:
    """The execution, what the platform records of it (the local runner: pipeline,
    end, attempt and parameters), then its steps."""
    of = f" of {status.pipeline_name}" if status.pipeline_name else ""
    when = f"started {status.started_at}"
    if status.attempts is not None:
        when += f", ended {status.ended_at or '-'}, attempt {status.attempts}"
    fields: dict[str, Any] = {"execution": status.execution_id, "status": status.status}
    if status.parameters is not None:
        fields["parameters"] = status.parameters
    console.event(
        "execution",
        f"Execution {status.execution_id}{of}: {status.status} ({when})",
        **fields,
    )
    if status.parameters is not None:
        console.event(
            "parameters",
            "Parameters: " + json.dumps(status.parameters, sort_keys=True),
            parameters=status.parameters,
        )
    for step in status.steps:
        show_step(console, step)


if __name__ == "__main__":
    run_process(main)
