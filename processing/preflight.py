"""Preflight step: the execution's parameters checked, the source data fingerprinted.

The pipeline's first step, never cached, ``python -m processing.preflight``:

1. Every pipeline parameter is checked against its domain (``pipelines.parameters``).
   Starters check before they start; an execution started from SageMaker's console or
   an API call of someone else's is checked here, and fails in this step, before any
   job that costs more, with the parameter's name in the step's failure reason.
2. The tables the feature query reads are fingerprinted at the data version
   (``processing.fingerprint``). The fingerprint is an argument of Extract, so a cache
   hit of Extract, and of everything after it, means the same data.

It writes ``preflight.json`` (the pipeline's ``PreflightReport`` property file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from pipelines.parameters import ParameterError, check_parameters
from pipelines.process_gc import run_process
from pipelines.spec import (
    EVERY_PARAMETER,
    Output,
    ProcessingSpec,
    PropertyFile,
    Setting,
    python_module,
)
from pipelines.step_names import PREFLIGHT, PREFLIGHT_REPORT
from processing.contract import ProcessingContract, log_first_read
from processing.extract_sql import source_tables
from processing.fingerprint import fingerprint_tables

log = logging.getLogger("processing.preflight")

OUTPUT_DIR = "/opt/ml/processing/preflight"
FINGERPRINT_PATH = "data.fingerprint"  # where Extract's argument is read from

# Never cached: its fingerprint of the data is what Extract's cache key depends on.
SPEC = ProcessingSpec(
    name=PREFLIGHT,
    command=python_module("processing.preflight"),
    arguments=(
        "--feature-set",
        Setting("features.feature_set"),
        "--output-dir",
        OUTPUT_DIR,
        EVERY_PARAMETER,
    ),
    outputs=(Output("preflight", OUTPUT_DIR),),
    property_files=(PropertyFile(PREFLIGHT_REPORT, "preflight", "preflight.json"),),
    sections=("aws", "snowflake", "features"),
)


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="processing.preflight")
    parser.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter's value, checked against its domain",
    )
    parser.add_argument("--feature-set", default="churn")
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    contract = ProcessingContract.from_environment()
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    parameters = dict(args.param)
    try:
        check_parameters(parameters)
    except ParameterError as exc:
        contract.fail(f"Preflight: {exc}")
        log.error("%s", exc)
        return 2
    try:
        report = run(args.feature_set, parameters.get("DataVersion", "latest"))
    except Exception as exc:
        contract.fail(f"Preflight failed: {type(exc).__name__}: {exc}")
        log.exception("preflight failed")
        return 1
    report["parameters"] = parameters
    output = contract.path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "preflight.json").write_text(json.dumps(report, indent=2))
    data = report["data"]
    log.info(
        "parameters checked; data fingerprint %s (%s) in %.2f s",
        data["fingerprint"][:12],
        ", ".join(f"{t}: {v['rows']} rows" for t, v in data["tables"].items()),
        data["seconds"],
    )
    return 0


def run(feature_set_name: str, data_version: str) -> dict[str, Any]:
    """The fingerprint of the tables ``feature_set_name`` reads at ``data_version``."""
    from features import load_feature_set
    from processing.extract import parse_data_version, resolve_data_version
    from stack.config import load_job_config
    from stack.resources import build_warehouse

    config = load_job_config()  # what the job's request carries, nothing else
    feature_set = load_feature_set(feature_set_name, config.features.directory)
    warehouse = build_warehouse(config)
    started = time.monotonic()
    log_first_read(log, f"fingerprint of the tables {feature_set.name} reads")
    with warehouse.connect() as conn:
        version = resolve_data_version(
            parse_data_version(data_version), warehouse.time_travel, conn
        )
        data = fingerprint_tables(
            conn,
            source_tables(feature_set.sql),
            version.timestamp.isoformat() if version.pinned else None,
        )
    data["seconds"] = round(time.monotonic() - started, 3)
    data["data_version"] = version.to_dict()
    return {"feature_set": feature_set.name, "data": data}


if __name__ == "__main__":
    run_process(main)
