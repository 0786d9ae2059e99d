"""``python -m pipelines.run``: run the whole loop locally, or upsert the pipeline to
SageMaker.

  python -m pipelines.run                      the whole loop on the embedded stack
  python -m pipelines.run --env dev --upsert   create or update the pipeline in
                                               SageMaker
  python -m pipelines.run --env dev --upsert --start
  python -m pipelines.run --definition [FILE]  print (or write) the definition JSON

Exit codes: 0 succeeded; 1 the pipeline or a step failed; 2 usage or configuration error
(unknown environment, missing role, unreachable Snowflake ...), always with a one-line
reason on stderr and no traceback. The SageMaker SDK is imported only when a definition
is built, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from stack.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    mode.add_argument("--role-arn", help="pipeline execution role (aws.role_arn)")
    mode.add_argument("--region", help="AWS region (aws.region)")
    mode.add_argument("--bucket", help="artifact bucket (aws.bucket)")
    mode.add_argument("--image-uri", help="our image in ECR (sagemaker.image_uri)")
    mode.add_argument(
        "--description", default=None, help="pipeline description on upsert"
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
    local.add_argument(
        "--no-writeback",
        action="store_true",
        help="skip writing predictions back to Snowflake",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        parameters = _parameters(args.param)
        config = load_config(args.env, _overrides(args))
        if args.definition:
            return _print_definition(config, args.definition)
        if args.upsert or args.start:
            return _upsert(config, args, parameters)
        return run_local(config, parameters, writeback=not args.no_writeback)
    except (UsageError, ConfigError) as exc:
        return _fail(EXIT_USAGE, str(exc), args.verbose)
    except KeyboardInterrupt:
        print("interrupted: the execution was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, a non-zero exit
        if _is_unreachable(exc):
            return _fail(EXIT_USAGE, str(exc), args.verbose)
        return _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}", args.verbose)


def _is_unreachable(exc: Exception) -> bool:
    """Snowflake or AWS cannot be reached or refuses our credentials: a set-up error."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from stack.warehouse import WarehouseUnavailable

    return isinstance(
        exc, WarehouseUnavailable | EndpointConnectionError | NoCredentialsError
    )


def _fail(code: int, message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"error: {first_line}", file=sys.stderr)
    return code


def _print_definition(config: Config, target: str) -> int:
    from pipelines.definition import build_definition

    text = json.dumps(build_definition(config), indent=2, sort_keys=True)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")
        print(f"wrote {target}", file=sys.stderr)
    return EXIT_OK


def _upsert(
    config: Config, args: argparse.Namespace, parameters: dict[str, str]
) -> int:
    if config.env == "local":
        raise UsageError(
            "--upsert needs an AWS environment: pass --env dev, staging or prod"
        )
    from pipelines.deploy import upsert_pipeline  # refuses a missing role first

    result = upsert_pipeline(
        config, description=args.description, start=args.start, parameters=parameters
    )
    print(f"{result.action} pipeline {result.pipeline_arn}")
    if result.execution_arn:
        print(f"started execution {result.execution_arn}")
    return EXIT_OK


def run_local(
    config: Config,
    parameters: dict[str, str],
    writeback: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    """The whole loop on this machine; returns the exit code."""
    if config.is_aws:
        raise UsageError(
            f"the {config.env} environment runs on SageMaker: use --upsert [--start]"
        )
    from datagen.seed import ensure_demo_data
    from pipelines.definition import build_definition
    from pipelines.local_runner import DefinitionError, LocalRunner, bind_parameters
    from stack.resources import build_resources

    started = time.monotonic()
    definition = build_definition(config)
    try:
        bind_parameters(definition, parameters)  # bad parameters fail before any work
    except DefinitionError as exc:
        raise UsageError(str(exc)) from None
    resources = build_resources(config)
    print(f"Environment {config.env}: state in {config.state_dir.resolve()}", file=out)
    seed = ensure_demo_data(
        resources.warehouse, config.demo.customers, config.demo.seed
    )
    verb = "Seeded" if seed.created else "Found"
    print(
        f"{verb} demo data in Snowflake: "
        + ", ".join(f"{name} {rows:,}" for name, rows in seed.rows.items()),
        file=out,
    )
    print(
        f"Running the pipeline definition ({len(json.dumps(definition)):,} bytes) "
        "locally",
        file=out,
    )
    runner = LocalRunner(resources, progress=lambda e, s, x: _progress(e, s, out))
    execution = runner.run(definition, parameters)
    written, writeback_error = None, None
    if (
        writeback
        and execution.status == "Succeeded"
        and "Deploy" in execution.properties
    ):
        try:
            written = _write_back(config, resources, execution, out)
        except Exception as exc:  # reported with the summary; the exit code says it
            writeback_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"  [FAIL] WriteBack: {writeback_error}", file=out, flush=True)
    _summary(config, execution, written, time.monotonic() - started, out)
    if execution.status != "Succeeded":
        failed = execution.failed_step
        print(
            f"Failed: step {failed.name}: {failed.failure_reason}"
            if failed
            else f"Failed: the execution {execution.status.lower()}",
            file=out,
        )
        return EXIT_FAILED
    if writeback_error:
        print(f"Failed: write-back: {writeback_error}", file=out)
        return EXIT_FAILED
    print("Succeeded", file=out)
    return EXIT_OK


def _progress(event: str, step: Any, out: TextIO) -> None:
    if event == "start":
        print(f"  [run ] {step.name} ({step.type})", file=out, flush=True)
    elif step.status == "Failed":
        print(
            f"  [FAIL] {step.name} after {step.duration_seconds:.1f}s: "
            f"{step.failure_reason}",
            file=out,
            flush=True,
        )
        for log in step.logs:
            print(f"         log: {log}", file=out, flush=True)
    else:
        detail = f" -> {step.outcome}" if step.type == "Condition" else ""
        print(
            f"  [ ok ] {step.name} {step.duration_seconds:.1f}s{detail}",
            file=out,
            flush=True,
        )


def _write_back(config: Config, resources: Any, execution: Any, out: TextIO) -> Any:
    from features import load_feature_set
    from snowflake.sagemaker_predictions.writeback import endpoint_scorer, write_back

    register = execution.properties.get("Register", {})
    endpoint = execution.properties["Deploy"]["EndpointName"]
    as_of = config.writeback.as_of or config.features.as_of
    result = write_back(
        resources.warehouse,
        load_feature_set(config.features.feature_set),
        endpoint_scorer(resources.endpoints.runtime_client(), endpoint),
        as_of=as_of,
        label_window_days=config.features.label_window_days,
        table=config.writeback.table,
        model_package_arn=register.get("ModelPackageArn"),
        execution_id=execution.execution_id,
        batch_rows=config.writeback.batch_rows,
    )
    print(
        f"  [ ok ] WriteBack: {result.rows_scored:,} scores as of {as_of} in "
        f"{result.batches} endpoint calls",
        file=out,
    )
    return result


def _summary(
    config: Config, execution: Any, writeback: Any, seconds: float, out: TextIO
) -> None:
    print("", file=out)
    print(
        f"Pipeline {execution.pipeline_name}, execution {execution.execution_id}",
        file=out,
    )
    for step in execution.steps:
        duration = (
            f"{step.duration_seconds:6.1f}s"
            if step.duration_seconds is not None
            else ""
        )
        print(f"  {step.name:<16}{step.status:<14}{duration}", file=out)
    report = execution.property_files.get("Evaluate", {}).get("EvaluationReport")
    if report:
        metrics = report["binary_classification_metrics"]
        shown = ", ".join(
            f"{k} {metrics[k]['value']:.4f}"
            for k in ("auc", "pr_auc", "log_loss", "f1")
            if k in metrics
        )
        print(f"Test metrics: {shown}", file=out)
    register = execution.properties.get("Register")
    if register:
        print(
            f"Model package: {register['ModelPackageArn']} "
            f"(version {register['ModelPackageVersion']}, "
            f"{register['ModelApprovalStatus']})",
            file=out,
        )
    deploy = execution.properties.get("Deploy")
    if deploy:
        print(
            f"Endpoint: {deploy['EndpointName']} at {deploy['Url']} "
            f"(/ping {_ping(deploy['Url'])}); stop it with "
            "`python -m pipelines.endpoint stop`",
            file=out,
        )
    if writeback is not None:
        print(
            f"Predictions: {writeback.rows_scored:,} rows merged into "
            f"{config.snowflake.database}.{config.snowflake.schema_name}."
            f"{writeback.table} "
            f"as of {writeback.as_of}",
            file=out,
        )
    print(
        f"Execution record: {execution.directory}/execution.json "
        f"({seconds:.0f}s in all)",
        file=out,
    )


def _ping(url: str | None) -> str:
    if not url:
        return "n/a"
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:  # noqa: S310
            return str(response.status)
    except OSError as exc:
        return f"unreachable: {exc}"


if __name__ == "__main__":
    sys.exit(main())
