"""``python -m snowflake.sagemaker_predictions``: deploy the Snowflake objects, or run
the batch write-back job.

    deploy --env ENV [--dry-run]   render and apply (or print) the SQL objects
    writeback --env ENV            score new or changed entities into PREDICTIONS

Exit codes: 0 done, 1 a step failed (named), 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from stack.config import ENVIRONMENTS, Config, ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    writeback = commands.add_parser(
        "writeback", help="score new or changed entities into PREDICTIONS"
    )
    writeback.add_argument("--env", choices=ENVIRONMENTS, help="default: MLOPS_ENV")
    writeback.add_argument(
        "--endpoint", help="endpoint name (default: sagemaker.endpoint_name)"
    )
    writeback.add_argument("--as-of", help="as-of date (default: writeback.as_of)")
    writeback.add_argument("--model-package-arn", help="recorded with each score")
    writeback.add_argument("--execution-id", help="recorded with each score")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # sqlglot (inside fakesnow) logs every Snowflake property DuckDB lacks (CLUSTER BY)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        config = load_config(
            args.env,
            overrides={"writeback.as_of": getattr(args, "as_of", None)},
        )
        if args.command == "deploy":
            return _deploy(config, args.dry_run)
        return _writeback(config, args)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _deploy(config: Config, dry_run: bool) -> int:
    from features import load_feature_set
    from snowflake.sagemaker_predictions.deploy import DeployError, deploy
    from snowflake.sagemaker_predictions.templates import render
    from stack.resources import build_resources
    from stack.warehouse import WarehouseUnavailable

    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    if dry_run:
        objects = render(config, feature_set, placeholders=True)
        print(f"-- deploy --env {config.env} --dry-run: nothing was applied")
        for obj in objects:
            where = "" if obj.embedded else " (real Snowflake only)"
            print(f"\n-- {obj.version}: {obj.kind} {obj.name}{where}")
            for statement in obj.statements:
                print(f"{statement};")
        return EXIT_OK
    warehouse = build_resources(config).warehouse
    # fakesnow runs none of the objects that need account values: placeholders do
    objects = render(config, feature_set, placeholders=warehouse.emulated)
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
    from features import load_feature_set
    from snowflake.sagemaker_predictions.writeback import (
        WritebackError,
        endpoint_scorer,
        write_back,
    )
    from stack.resources import build_resources
    from stack.warehouse import WarehouseUnavailable

    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    resources = build_resources(config)
    endpoint = args.endpoint or config.sagemaker.endpoint_name
    info = resources.endpoints.describe(endpoint)
    if info is None or info.status != "InService":
        status = "does not exist" if info is None else f"is {info.status}"
        print(
            f"error: writeback: endpoint {endpoint} {status}; deploy a model first "
            "(python -m pipelines.run) or name one with --endpoint",
            file=sys.stderr,
        )
        return EXIT_FAILED
    as_of = config.writeback.as_of or config.features.as_of
    try:
        result = write_back(
            resources.warehouse,
            feature_set,
            endpoint_scorer(
                resources.endpoints.runtime_client(),
                endpoint,
                config.writeback.batch_rows,
                config.writeback.concurrency,
            ),
            as_of=as_of,
            label_window_days=config.features.label_window_days,
            table=config.writeback.table,
            model_package_arn=args.model_package_arn,
            execution_id=args.execution_id,
            entity_type=config.writeback.entity_type,
        )
    except (WritebackError, WarehouseUnavailable) as exc:
        print(f"error: writeback: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{result.table} as of {result.as_of}: {result.rows_scored:,} new or changed "
        f"scored in {result.batches} endpoint calls; "
        f"{result.rows_inserted:,} inserted, {result.rows_updated:,} updated, "
        f"{result.rows_unchanged:,} unchanged"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
