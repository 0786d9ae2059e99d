"""What the command-line tools print: lines for people, or JSON lines for CD logs.

``--log-format json`` turns every line into one JSON object with ``time``, ``event``
and ``message`` plus the event's own fields, so a CD runner (Harness, GitHub Actions)
can parse step results without scraping text. Errors go to stderr in both formats.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import EndpointConnectionError, NoCredentialsError

from stack.objectstore import LocalObjectStore
from stack.warehouse import WarehouseUnavailable

FORMATS = ("text", "json")
# How every command ends: 0 done; 1 the work failed; 2 a usage or configuration error,
# found before any work; 130 interrupted (Ctrl-C).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command was asked what it cannot do as given (exit 2, before any work)."""


class Console:
    def __init__(
        self,
        log_format: str = "text",
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        if log_format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
        self.json = log_format == "json"
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def event(self, event: str, message: str, **fields: Any) -> None:
        """One line of progress or result on stdout."""
        self._write(self.out, event, message, fields)

    def note(self, message: str) -> None:
        """A side remark (stderr in text, so stdout stays the result)."""
        self._write(self.err, "note", message, {})

    def error(self, message: str, **fields: Any) -> None:
        self._write(self.err, "error", message, fields, prefix="error: ")

    def _write(
        self,
        stream: TextIO,
        event: str,
        message: str,
        fields: dict[str, Any],
        prefix: str = "",
    ) -> None:
        if self.json:
            record = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "event": event,
                "message": message,
                **fields,
            }
            print(json.dumps(record, default=str), file=stream, flush=True)
        else:
            print(prefix + message, file=stream, flush=True)


def print_json(console: Console, data: Any, target: str) -> None:
    """``data`` as indented JSON (keys sorted) on stdout when ``target`` is "-", else
    written to the file ``target``, noted.
    """
    text = json.dumps(data, indent=2, sort_keys=True)
    if target == "-":
        print(text, file=console.out)
    else:
        Path(target).write_text(text + "\n")
        console.note(f"wrote {target}")


def location(store: Any, uri: str) -> str:
    """Where a person finds ``uri``: a file path in the local object store's folder,
    else the URI itself (``s3://...`` on AWS).
    """
    if isinstance(store, LocalObjectStore):
        return str(store.path_of(uri).resolve())
    return uri


def show_progress(console: Console, event: str, step: Any) -> None:
    """A local runner's step starting ("start") or ending ("end"), one line each."""
    fields = {"step": step.name, "type": step.type, "status": step.status}
    if event == "start":
        console.event("step_started", f"  [run ] {step.name} ({step.type})", **fields)
    elif step.status == "Failed":
        console.event(
            "step_failed",
            f"  [FAIL] {step.name} after {step.duration_seconds:.1f}s: "
            f"{step.failure_reason}",
            failure_reason=step.failure_reason,
            logs=step.logs,
            **fields,
        )
        for log in step.logs:
            console.event("step_log", f"         log: {log}", step=step.name, log=log)
    elif step.cached_from:
        console.event(
            "step_cached",
            f"  [cache] {step.name} reused from execution {step.cached_from}",
            cached_from=step.cached_from,
            **fields,
        )
    else:
        detail = f" -> {step.outcome}" if step.type == "Condition" else ""
        console.event(
            "step_succeeded",
            f"  [ ok ] {step.name} {step.duration_seconds:.1f}s{detail}",
            duration_seconds=step.duration_seconds,
            outcome=step.outcome,
            **fields,
        )


def show_step(
    console: Console, step: Any, event: str = "step", with_reason: bool = True
) -> None:
    """One step's final state: name, status, duration, where it was reused from and
    (``with_reason``) why it failed. ``step`` is a local runner's StepRecord or a
    SageMaker StepStatus: both have these fields.
    """
    duration = step.duration_seconds
    reason = step.failure_reason if with_reason else None
    shown = f"{duration:6.1f}s" if duration is not None else "       "
    extra = f"  cached from {step.cached_from}" if step.cached_from else ""
    extra += f"  {reason}" if reason else ""
    console.event(
        event,
        f"  {step.name:<16}{step.status:<14}{shown}{extra}",
        step=step.name,
        status=step.status,
        duration_seconds=duration,
        failure_reason=reason,
        cached_from=step.cached_from,
    )


def fail(console: Console, code: int, message: str, verbose: bool) -> int:
    """Print the first line of ``message`` as the error (the traceback too when
    ``verbose``) and return ``code``: how every command ends on a failure.
    """
    import traceback

    if verbose:
        traceback.print_exc()
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    console.error(first_line, exit_code=code)
    return code


def run_command(
    console: Console,
    verbose: bool,
    work: Callable[[], int],
    usage_errors: tuple[type[Exception], ...] = (UsageError,),
) -> int:
    """Run a command's ``work`` and end it as every command ends: ``work``'s exit code;
    EXIT_USAGE for ``usage_errors`` and for Snowflake or AWS out of reach;
    EXIT_INTERRUPTED on Ctrl-C; EXIT_FAILED for anything else. One line each on
    stderr, no traceback unless ``verbose``.
    """
    try:
        return work()
    except usage_errors as exc:
        return fail(console, EXIT_USAGE, str(exc), verbose)
    except KeyboardInterrupt:
        console.error("interrupted: the execution was stopped")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, a non-zero exit
        if is_unreachable(exc):
            return fail(console, EXIT_USAGE, str(exc), verbose)
        return fail(console, EXIT_FAILED, f"{type(exc).__name__}: {exc}", verbose)


def is_unreachable(exc: Exception) -> bool:
    """Snowflake or AWS cannot be reached or refuses our credentials: a set-up error."""
    return isinstance(
        exc, WarehouseUnavailable | EndpointConnectionError | NoCredentialsError
    )
