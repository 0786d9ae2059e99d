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

The work is done in ``pipelines.operations`` (the local run, and its summary in
``pipelines.summary``) and ``pipelines.upsert`` (upsert, start, wait); the options
other commands share are declared in ``pipelines.arguments``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipelines import arguments
from pipelines.arguments import BUCKET, IMAGE_URI, REGION, ROLE_ARN
from pipelines.console import EXIT_OK, Console, UsageError, print_json, run_command
from pipelines.operations import git_commit, run_local
from pipelines.process_gc import run_process
from pipelines.upsert import (
    UpsertRequest,
    check_display_name,
    check_tags,
    upsert_and_report,
)
from pipelines.validation import InvalidDefinition
from stack.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run",
        description="Run the churn pipeline locally, or upsert it to SageMaker.",
    )
    arguments.add_environment(parser)
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
        type=arguments.positive_seconds,
        default=4 * 3600,
        metavar="SECONDS",
        help="give up waiting after this long, exit 1 (default 14400)",
    )
    mode.add_argument(
        "--poll-interval",
        type=arguments.positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how often --wait asks SageMaker (default 30)",
    )
    arguments.add_settings(mode, ROLE_ARN, REGION, BUCKET, IMAGE_URI)
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
    arguments.add_local_run(parser)
    parser.add_argument(
        "--no-writeback",
        action="store_true",
        help="skip the WriteBack step (--param WriteBack=false)",
    )
    arguments.add_output(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(args.log_format)
    return run_command(
        console,
        args.verbose,
        lambda: _run(args, console),
        (UsageError, ConfigError, InvalidDefinition),
    )


def _run(args: argparse.Namespace, console: Console) -> int:
    _check_mode(args)
    parameters = _parameters(args)
    tags = check_tags(arguments.tags_from(args.tags))
    config = load_config(args.env, arguments.config_overrides(args))
    if args.definition:
        from pipelines.definition import build_definition  # pandas; the SDK to build

        print_json(console, build_definition(config), args.definition)
        return EXIT_OK
    if not (args.upsert or args.start or args.wait):
        return run_local(config, parameters, console=console)
    request = UpsertRequest(
        parameters=parameters,
        tags=tags,
        description=args.description,
        display_name=args.display_name,
        start=args.start or args.wait,
        wait=args.wait,
        wait_timeout=args.wait_timeout,
        poll_interval=args.poll_interval,
    )
    return upsert_and_report(config, console, request)


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
    if args.display_name:
        check_display_name(args.display_name)


def _parameters(args: argparse.Namespace) -> dict[str, str]:
    """``--param`` values, with the code's commit for a run and ``--no-writeback``."""
    parameters = arguments.parameters_from(args.param)
    if not args.definition:
        parameters.setdefault("GitCommit", git_commit())
    if args.no_writeback:
        if parameters.get("WriteBack", "false").lower() != "false":
            raise UsageError("--no-writeback contradicts --param WriteBack=true")
        parameters["WriteBack"] = "false"
    return parameters


if __name__ == "__main__":
    run_process(main)
