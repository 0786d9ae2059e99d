"""``python -m snowflake.sagemaker_predictions``: deploy the Snowflake objects, or run
the batch write-back job.

    deploy --env ENV [--dry-run]   render and apply (or print) the SQL objects
    package --env ENV --output DIR the scoring procedure's code and settings, as
                                   deploy uploads them (to inspect or keep)
    writeback --env ENV            score new or changed entities into PREDICTIONS

Exit codes: 0 done, 1 a step failed (named), 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import stack.resources
from pipelines.process_gc import run_process
from pipelines.spec import (
    EXECUTION_ID,
    Output,
    ProcessingSpec,
    PropertyFile,
    Setting,
    StepProperty,
    python_module,
)
from pipelines.step_names import REGISTER, WRITEBACK, WRITEBACK_REPORT
from processing.contract import ProcessingContract, command_config
from snowflake.sagemaker_predictions.procedure import ProcedureSettings
from snowflake.sagemaker_predictions.procedure_code import build_procedure_code
from stack.config import ENVIRONMENTS, Config, ConfigError, load_config
from stack.warehouse import WarehouseUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OUTPUT_DIR = "/opt/ml/processing/writeback"

# The pipeline's WriteBack step, once the endpoint serves the registered model. Never
# cached: the entities to score change between executions with the same arguments.
# Rerunning it is safe: a rerun changes nothing (keyed MERGE).
SPEC = ProcessingSpec(
    name=WRITEBACK,
    command=python_module("snowflake.sagemaker_predictions", "writeback"),
    arguments=(
        "--endpoint",
        Setting("sagemaker.endpoint_name"),
        "--model-package-arn",
        StepProperty(REGISTER, "ModelPackageArn"),
        "--execution-id",
        EXECUTION_ID,
        "--wait-for-endpoint",
        Setting("writeback.endpoint_wait_seconds"),
        "--output-dir",
        OUTPUT_DIR,
    ),
    outputs=(Output("writeback", OUTPUT_DIR),),
    property_files=(PropertyFile(WRITEBACK_REPORT, "writeback", "writeback.json"),),
    sections=("resources", "aws", "snowflake", "features", "writeback"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m snowflake.sagemaker_predictions",
        description="Predictions back in Snowflake: deploy the objects, write back.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    deploy = commands.add_parser("deploy", help="create or update the SQL objects")
    deploy.add_argument("--env", choices=ENVIRONMENTS, help="default: MLOPS_ENV")
    deploy.add_argument(
        "--dry-run", action="store_true", help="print the SQL, connect to nothing"
    )
    package = commands.add_parser(
        "package",
        help="write the scoring procedure's archive and settings file, as deploy "
        "uploads them",
    )
    package.add_argument("--env", choices=ENVIRONMENTS, help="default: MLOPS_ENV")
    package.add_argument(
        "--output", required=True, metavar="DIR", help="folder to write them into"
    )
    writeback = commands.add_parser(
        "writeback", help="score new or changed entities into PREDICTIONS"
    )
    writeback.add_argument("--env", choices=ENVIRONMENTS, help="default: MLOPS_ENV")
    writeback.add_argument(
        "--endpoint", help="endpoint name (default: sagemaker.endpoint_name)"
    )
    writeback.add_argument("--as-of", help="as-of date (default: writeback.as_of)")
    writeback.add_argument(
        "--model-package-arn",
        help="recorded with each score (default: the package the endpoint serves)",
    )
    writeback.add_argument("--execution-id", help="recorded with each score")
    writeback.add_argument(
        "--wait-for-endpoint",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait this long for the endpoint to be InService (default: do not wait)",
    )
    writeback.add_argument(
        "--output-dir",
        metavar="DIR",
        help="run as a processing job: write writeback.json to DIR (a path in the "
        "container, /opt/ml/processing/...) and a failure's reason where SageMaker "
        "reads it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # sqlglot (inside fakesnow) logs every Snowflake property DuckDB lacks (CLUSTER BY)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        overrides = {"writeback.as_of": getattr(args, "as_of", None)}
        if args.command in ("deploy", "package"):
            config = load_config(args.env, overrides)
        else:
            config = command_config(args.env, overrides)
        if args.command == "deploy":
            return _deploy(config, args.dry_run)
        if args.command == "package":
            return _package(config, Path(args.output))
        return _writeback(config, args)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _deploy(config: Config, dry_run: bool) -> int:
    from features import load_feature_set

    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    settings = ProcedureSettings.from_config(config, feature_set)
    with tempfile.TemporaryDirectory(prefix="sagemaker-predictions-") as directory:
        code = build_procedure_code(settings, Path(directory))
        if dry_run:
            return _print_deployment(config, feature_set, code)
        return _apply(config, feature_set, code)


def _package(config: Config, output: Path) -> int:
    from features import load_feature_set

    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    settings = ProcedureSettings.from_config(config, feature_set)
    if output.exists() and not output.is_dir():
        print(f"error: --output {output} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    output.mkdir(parents=True, exist_ok=True)
    code = build_procedure_code(settings, output)
    print(code.description)
    for path, digest in (
        (code.archive, code.archive_sha256),
        (code.settings, code.settings_sha256),
    ):
        print(f"{digest}  {path}")
    stage = config.snowflake_objects.code_stage
    print(f"deploy puts them in @{stage}/{code.folder}/")
    return EXIT_OK


def _print_deployment(config: Config, feature_set: Any, code: Any) -> int:
    from snowflake.sagemaker_predictions.templates import render

    objects = render(config, feature_set, code, placeholders=True)
    print(f"-- deploy --env {config.env} --dry-run: nothing was applied")
    print(
        f"-- the procedure's code: {code.description}; the files the PUTs name are "
        "built again by a deploy"
    )
    for obj in objects:
        where = "" if obj.embedded else " (real Snowflake only)"
        print(f"\n-- {obj.version}: {obj.kind} {obj.name}{where}")
        for statement in obj.statements:
            print(f"{statement};")
    return EXIT_OK


def _apply(config: Config, feature_set: Any, code: Any) -> int:
    from snowflake.sagemaker_predictions.deploy import DeployError, deploy
    from snowflake.sagemaker_predictions.templates import render

    warehouse = stack.resources.build_resources(config).warehouse
    # fakesnow runs none of the objects that need account values: placeholders do
    objects = render(config, feature_set, code, placeholders=warehouse.emulated)
    try:
        outcomes = deploy(warehouse, objects)
    except (DeployError, WarehouseUnavailable) as exc:
        print(f"error: deploy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for outcome in outcomes:
        note = f" ({outcome.note})" if outcome.note else ""
        print(
            f"{outcome.status:>19}  {outcome.obj.kind:<17} {outcome.obj.name}"
            f"  [{outcome.obj.version}]{note}"
        )
    only_real = [o.obj.name for o in outcomes if o.status == "real Snowflake only"]
    if only_real:
        print(
            "The embedded Snowflake (fakesnow) cannot run these; they exist only in "
            f"real Snowflake: {', '.join(only_real)}"
        )
    return EXIT_OK


def _writeback(config: Config, args: argparse.Namespace) -> int:
    from snowflake.sagemaker_predictions.writeback import WritebackError

    contract = None
    if args.output_dir:
        contract = ProcessingContract.from_environment()
    try:
        result = _run_writeback(config, args)
    except (WritebackError, WarehouseUnavailable, EndpointNotReady) as exc:
        print(f"error: writeback: {exc}", file=sys.stderr)
        if contract:
            contract.fail(str(exc))
        return EXIT_FAILED
    except Exception as exc:
        if contract:
            # the first line: SageMaker shows it as the step's FailureReason; the
            # whole error and its traceback go to the job's log
            contract.fail(f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    print(
        f"{result.table} as of {result.as_of}: {result.rows_scored:,} new or changed "
        f"scored in {result.batches} endpoint call{'s' * (result.batches != 1)}; "
        f"{result.rows_inserted:,} inserted, {result.rows_updated:,} updated, "
        f"{result.rows_unchanged:,} unchanged, {result.rows_deleted:,} deleted (no "
        "longer returned by the feature query for that date)"
    )
    if contract:
        output = contract.path(args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        summary = {**asdict(result), "as_of": result.as_of.isoformat()}
        (output / "writeback.json").write_text(json.dumps(summary, indent=2) + "\n")
    return EXIT_OK


class EndpointNotReady(Exception):
    """The endpoint to score through does not exist or is not InService."""


def _run_writeback(config: Config, args: argparse.Namespace) -> Any:
    from features import load_feature_set
    from snowflake.sagemaker_predictions.writeback import endpoint_scorer, write_back

    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    resources = stack.resources.build_resources(config)
    endpoint = args.endpoint or config.sagemaker.endpoint_name
    _wait_in_service(resources.endpoints, endpoint, args.wait_for_endpoint)
    # scores record the model that made them; by default, the one the endpoint serves
    package_arn = args.model_package_arn or resources.endpoints.serving_package(
        endpoint
    )
    return write_back(
        resources.warehouse,
        feature_set,
        endpoint_scorer(
            resources.endpoints.runtime_client(),
            endpoint,
            config.writeback.batch_rows,
            config.writeback.concurrency,
        ),
        as_of=config.writeback.as_of or config.features.as_of,
        label_window_days=config.features.label_window_days,
        table=config.writeback.table,
        model_package_arn=package_arn,
        execution_id=args.execution_id,
        entity_type=config.writeback.entity_type,
    )


def _wait_in_service(endpoints: Any, name: str, seconds: float) -> None:
    """Return once ``name`` is InService; raise EndpointNotReady after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        info = endpoints.describe(name)
        if info is not None and info.status == "InService":
            return
        status = "does not exist" if info is None else f"is {info.status}"
        failed = info is not None and info.status in ("Failed", "OutOfService")
        if failed or time.monotonic() >= deadline:
            waited = f" after {seconds:.0f} s" if seconds and not failed else ""
            raise EndpointNotReady(
                f"endpoint {name} {status}{waited}; deploy a model first "
                "(python -m pipelines.run) or name one with --endpoint"
            )
        time.sleep(min(15.0, max(0.1, deadline - time.monotonic())))


if __name__ == "__main__":
    run_process(main)
