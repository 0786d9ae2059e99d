"""``python -m pipelines.run``: run the whole loop locally, or upsert the pipeline to
SageMaker.

  python -m pipelines.run                      the whole loop on the embedded stack
  python -m pipelines.run --env dev --upsert   create or update the pipeline in
                                               SageMaker
  python -m pipelines.run --env dev --upsert --start --wait
  python -m pipelines.run --definition [FILE]  print (or write) the definition JSON

Exit codes: 0 succeeded; 1 the pipeline or a step failed (or --wait ran out); 2 usage or
configuration error (unknown environment, missing role, unreachable Snowflake, a
definition SageMaker would refuse ...), always with a one-line reason on stderr and no
traceback. ``--log-format json`` prints JSON lines for CD logs. The SageMaker SDK is
imported only when a definition is built, so ``--help`` and argument errors answer at
once. Past executions: ``python -m pipelines.executions``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FORMATS,
    Console,
    fail,
    show_progress,
    show_step,
)
from pipelines.validation import InvalidDefinition
from stack.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pipelines.service import ExecutionStatus, PipelineService


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run",
        description="Run the churn pipeline locally, or upsert it to SageMaker.",
    )
    parser.add_argument("--env", help="local (default), test, dev, staging or prod")
    mode = parser.add_argument_group("SageMaker")
    mode.add_argument(
        "--upsert",
        action="store_true",
        help="create or update the pipeline in SageMaker",
    )
    mode.add_argument(
        "--start",
        action="store_true",
        help="start an execution in SageMaker (implies --upsert)",
    )
    mode.add_argument(
        "--wait",
        action="store_true",
        help="wait for the execution to end, showing its steps (implies --start)",
    )
    mode.add_argument(
        "--wait-timeout",
        type=_positive_seconds,
        default=4 * 3600,
        metavar="SECONDS",
        help="give up waiting after this long, exit 1 (default 14400)",
    )
    mode.add_argument(
        "--poll-interval",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how often --wait asks SageMaker (default 30)",
    )
    mode.add_argument("--role-arn", help="pipeline execution role (aws.role_arn)")
    mode.add_argument("--region", help="AWS region (aws.region)")
    mode.add_argument("--bucket", help="artifact bucket (aws.bucket)")
    mode.add_argument("--image-uri", help="our image in ECR (sagemaker.image_uri)")
    mode.add_argument(
        "--description", default=None, help="pipeline description on upsert"
    )
    mode.add_argument(
        "--tags",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="tags for the pipeline (repeatable)",
    )
    mode.add_argument(
        "--display-name", help="display name of the pipeline and of the execution"
    )
    parser.add_argument(
        "--definition",
        nargs="?",
        const="-",
        metavar="FILE",
        help="print the definition JSON (or write it to FILE) and exit",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a pipeline parameter (repeatable)",
    )
    local = parser.add_argument_group("local run")
    local.add_argument("--customers", type=int, help="demo data size (demo.customers)")
    local.add_argument("--state-dir", help="where the embedded stack keeps its state")
    local.add_argument(
        "--port", type=int, help="local endpoint port (local_endpoint.port)"
    )
    parser.add_argument(
        "--no-writeback",
        action="store_true",
        help="skip the WriteBack step (--param WriteBack=false)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text for people (default), json lines for CD logs",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "aws.role_arn": args.role_arn,
        "aws.region": args.region,
        "aws.bucket": args.bucket,
        "sagemaker.image_uri": args.image_uri,
        "demo.customers": args.customers,
        "state_dir": args.state_dir,
        "local_endpoint.port": args.port,
    }


def _parameters(pairs: Sequence[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param expects NAME=VALUE, got {pair!r}")
        parameters[name] = value
    return parameters


_TAG_KEY = re.compile(r"^[\w.:/=+@ -]{1,128}$")
_DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")


def _tags(values: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        for pair in filter(None, (p.strip() for p in value.split(","))):
            key, sep, tag_value = pair.partition("=")
            if not sep:
                raise UsageError(f"--tags expects KEY=VALUE pairs, got {pair!r}")
            tags[key.strip()] = tag_value.strip()
    return check_tags(tags)


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` if SageMaker would take them as they are, else UsageError."""
    for key, value in tags.items():
        if not _TAG_KEY.match(key) or key.lower().startswith("aws:"):
            raise UsageError(
                f"tag key {key!r}: 1-128 letters, digits, spaces and _.:/=+-@, "
                "not starting with aws:"
            )
        if len(value) > 256:
            raise UsageError(f"tag {key}: the value is over 256 characters")
    return tags


def _check_mode(args: argparse.Namespace) -> None:
    """Flags that only mean something on SageMaker are refused for a local run."""
    remote = args.upsert or args.start or args.wait
    if args.definition and remote:
        raise UsageError("--definition prints the definition: drop --upsert/--start")
    if not remote:
        used = [
            flag
            for flag, value in (
                ("--description", args.description),
                ("--tags", args.tags),
                ("--display-name", args.display_name),
            )
            if value
        ]
        if used:
            raise UsageError(f"{', '.join(used)} only apply with --upsert")
    if args.display_name and not _DISPLAY_NAME.match(args.display_name):
        raise UsageError(
            "--display-name takes 1-82 letters, digits and single hyphens, "
            f"got {args.display_name!r}"
        )


def git_commit() -> str:
    """The commit of the code this runs (``-dirty`` with uncommitted changes), or
    ``unknown`` outside a git checkout; models and MLflow runs carry it.
    """
    import subprocess

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
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(args.log_format)
    try:
        _check_mode(args)
        parameters = _parameters(args.param)
        if not args.definition:
            parameters.setdefault("GitCommit", git_commit())
        if args.no_writeback:
            if parameters.get("WriteBack", "false").lower() != "false":
                raise UsageError("--no-writeback contradicts --param WriteBack=true")
            parameters["WriteBack"] = "false"
        tags = _tags(args.tags)
        config = load_config(args.env, _overrides(args))
        if args.definition:
            return _print_definition(config, args.definition, console)
        if args.upsert or args.start or args.wait:
            return upsert_and_report(
                config,
                console,
                UpsertRequest(
                    parameters=parameters,
                    tags=tags,
                    description=args.description,
                    display_name=args.display_name,
                    start=args.start or args.wait,
                    wait=args.wait,
                    wait_timeout=args.wait_timeout,
                    poll_interval=args.poll_interval,
                ),
            )
        return run_local(config, parameters, console=console)
    except (UsageError, ConfigError, InvalidDefinition) as exc:
        return fail(console, EXIT_USAGE, str(exc), args.verbose)
    except KeyboardInterrupt:
        console.error("interrupted: the execution was stopped")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, a non-zero exit
        if is_unreachable(exc):
            return fail(console, EXIT_USAGE, str(exc), args.verbose)
        return fail(console, EXIT_FAILED, f"{type(exc).__name__}: {exc}", args.verbose)


def is_unreachable(exc: Exception) -> bool:
    """Snowflake or AWS cannot be reached or refuses our credentials: a set-up error."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from stack.warehouse import WarehouseUnavailable

    return isinstance(
        exc, WarehouseUnavailable | EndpointConnectionError | NoCredentialsError
    )


def _print_definition(config: Config, target: str, console: Console) -> int:
    from pipelines.definition import build_definition

    text = json.dumps(build_definition(config), indent=2, sort_keys=True)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")
        console.note(f"wrote {target}")
    return EXIT_OK


@dataclass(frozen=True)
class UpsertRequest:
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    display_name: str | None = None
    start: bool = False
    wait: bool = False
    wait_timeout: float = 4 * 3600
    poll_interval: float = 30.0


def upsert_and_report(config: Config, console: Console, request: UpsertRequest) -> int:
    """Upsert the pipeline, start and wait for it as asked; returns the exit code."""
    from stack.resources import build_pipelines

    service = build_pipelines(config)
    if service.runs_here:
        raise UsageError(
            "--upsert needs an AWS environment: pass --env dev, staging or prod"
        )
    from pipelines.remote import require_role

    role_arn = require_role(config)  # before looking for credentials: likelier
    service.check_access()
    name = config.sagemaker.pipeline_name
    result = service.upsert(
        _checked_definition(config, request.parameters),
        name=name,
        role_arn=role_arn,
        description=request.description or f"churn pipeline ({config.env})",
        tags={"environment": config.env, **request.tags},
        display_name=request.display_name,
    )
    console.event(
        "upserted",
        f"{result.action} pipeline {result.pipeline_arn}",
        action=result.action,
        pipeline_arn=result.pipeline_arn,
    )
    if not request.start:
        return EXIT_OK
    execution = service.start(
        name, request.parameters, display_name=request.display_name
    )
    console.event("started", f"started execution {execution}", execution_arn=execution)
    if not request.wait:
        return EXIT_OK
    return _wait(service, execution, request, console)


def _checked_definition(config: Config, parameters: dict[str, str]) -> dict[str, Any]:
    """The definition to send, checked against SageMaker's API model, and the
    parameters against it, before anything is sent.
    """
    from pipelines.definition import build_definition, make_session
    from pipelines.local_runner import DefinitionError, bind_parameters

    definition = build_definition(config, make_session(config))
    try:
        bind_parameters(definition, parameters)
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from None
    return definition


def _wait(
    service: PipelineService, execution: str, request: UpsertRequest, console: Console
) -> int:
    from pipelines.service import WaitTimeout

    seen: dict[str, str] = {}

    def show(status: ExecutionStatus) -> None:
        for step in status.steps:
            if seen.get(step.name) != step.status:
                seen[step.name] = step.status
                console.event(
                    "step",
                    f"  {step.name:<16}{step.status}",
                    step=step.name,
                    status=step.status,
                )

    try:
        final = service.wait(
            execution, request.wait_timeout, request.poll_interval, on_poll=show
        )
    except WaitTimeout as timeout:
        console.error(str(timeout), exit_code=EXIT_FAILED)
        return EXIT_FAILED
    for step in final.steps:
        show_step(console, step, event="step_result")
    if final.status == "Succeeded":
        console.event(
            "execution", "Succeeded", status=final.status, execution_arn=execution
        )
        return EXIT_OK
    failed = final.failed_step
    reason = (
        f"step {failed.name}: {failed.failure_reason}"
        if failed
        else final.failure_reason or f"the execution {final.status.lower()}"
    )
    console.event(
        "execution",
        f"Failed: {reason}",
        status=final.status,
        execution_arn=execution,
        failed_step=failed.name if failed else None,
    )
    return EXIT_FAILED


def run_local(
    config: Config, parameters: dict[str, str], console: Console | None = None
) -> int:
    """The whole loop on this machine; returns the exit code."""
    console = console or Console()
    from pipelines.service import LocalPipelines
    from stack.resources import build_pipelines

    started = time.monotonic()
    pipelines = build_pipelines(config)
    if not isinstance(pipelines, LocalPipelines):
        raise UsageError(
            f"the {config.env} environment runs on SageMaker: use --upsert [--start]"
        )
    resources = pipelines.resources
    from features import SchemaError, load_feature_set
    from pipelines.definition import build_definition
    from pipelines.local_runner import DefinitionError, StateBusy, bind_parameters
    from pipelines.summary import summarise, verdict

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
    from pipelines.parameters import PARAMETERS, ParameterError, check_parameters

    try:
        check_parameters(parameters)
    except ParameterError:
        return False
    return set(parameters) <= set(PARAMETERS)


def _seed_demo_data(config: Config, resources: Any, console: Console) -> None:
    from datagen.seed import ensure_demo_data

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


def _check_endpoint_port(config: Config, resources: Any) -> None:
    """A local endpoint's port taken by another program stops the run before its
    first step (not at Deploy, a minute later).
    """
    from stack.endpoints import EndpointError, LocalEndpoints

    if not isinstance(resources.endpoints, LocalEndpoints):
        return
    try:
        resources.endpoints.check_port(config.sagemaker.endpoint_name)
    except EndpointError as exc:
        raise UsageError(f"{exc}; or pass --port") from None


if __name__ == "__main__":
    sys.exit(main())
