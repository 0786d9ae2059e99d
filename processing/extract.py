"""Extract step: the feature query from Snowflake to train/validation/test Parquet.

Pure pieces live beside this module (``extract_sql``: the SQL; ``stream``: slices into
Parquet); this module pins the data version, picks the route, writes the manifest, and
holds ``main``, the thin entry point the processing container runs as
``python -m processing.extract``. Connection settings come from the project
configuration of the environment named by ``MLOPS_ENV``; credentials are resolved when
the connection opens, never passed as arguments.

Two routes (``extract.route``):
Either way each worker runs the feature query once, for its shard, into a temporary
table of its session, and reads that table from then on:
  - ``connector`` (default): each worker streams its shard through the connector in
    slices into one Parquet file per split; memory stays flat.
  - ``copy_into``: Snowflake unloads each split of each shard as Parquet to an
    external stage (storage integration) whose URL is the pipeline's artifact root,
    one file set per instance; no row passes through the worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features import FeatureSet, SchemaError, load_feature_set
from pipelines.process_gc import run_process
from pipelines.spec import (
    Output,
    Parameter,
    ProcessingSpec,
    ReportValue,
    Setting,
    python_module,
)
from pipelines.step_names import EXTRACT, PREFLIGHT, PREFLIGHT_REPORT
from processing.contract import ProcessingContract, log_first_read
from processing.extract_sql import (
    DATA_VERSION_PARAM,
    copy_into_statement,
    pin_to_data_version,
    query_sha256,
    split_predicates,
)
from processing.stream import (
    SPLITS,
    SplitWriters,
    assign_split,
    materialized_shard,
    profile,
    stream_features,
)

__all__ = ["SPEC", "SPLITS", "assign_split", "query_features", "main"]

log = logging.getLogger("processing.extract")

OUTPUT_DIR = "/opt/ml/processing/output"

# Cached: the same parameters and the same data fingerprint mean the same splits.
SPEC = ProcessingSpec(
    name=EXTRACT,
    command=python_module("processing.extract"),
    arguments=(
        "--feature-set",
        Setting("features.feature_set"),
        "--as-of",
        Parameter("AsOfDate"),
        "--label-window-days",
        Parameter("LabelWindowDays", text=True),
        "--validation-fraction",
        Setting("features.validation_fraction"),
        "--test-fraction",
        Setting("features.test_fraction"),
        "--data-version",
        Parameter("DataVersion"),
        # the data's fingerprint: changed data, changed cache key
        "--data-fingerprint",
        ReportValue(PREFLIGHT, PREFLIGHT_REPORT, "data.fingerprint"),
    ),
    outputs=tuple(
        Output(split, f"{OUTPUT_DIR}/{split}", folder=("features", split))
        for split in SPLITS
    ),
    sections=("aws", "snowflake", "extract", "features"),
    cached=True,
    instance_count=Parameter("ProcessingInstanceCount"),
)


def query_features(conn: Any, sql: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """Run a (small) feature query with bound parameters into one DataFrame.

    For scoring batches that fit in memory; the Extract step streams instead.
    """
    cursor = conn.cursor()
    cursor.execute(sql, dict(params))
    with warnings.catch_warnings():
        # fakesnow 0.12 warns about an extra Arrow copy on every fetch; not actionable
        warnings.simplefilter("ignore", UserWarning)
        frame = cursor.fetch_pandas_all()
    frame.columns = [c.lower() for c in frame.columns]
    return frame


@dataclass(frozen=True)
class DataVersion:
    """The point in time the extract read, and whether Snowflake pinned it."""

    timestamp: datetime
    pinned: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp.isoformat(),
            "pinned": self.pinned,
            "note": self.note,
        }


LATEST = "latest"


def parse_data_version(text: str) -> datetime | None:
    """``latest`` (None: the time the extract starts) or an ISO 8601 instant (UTC when
    it names no zone)."""
    if text == LATEST:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--data-version {text!r} is neither 'latest' nor an ISO 8601 timestamp"
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def resolve_data_version(
    requested: datetime | None, time_travel: bool, conn: Any
) -> DataVersion:
    """The one point in time this worker reads every table at.

    ``requested`` (the pipeline's DataVersion) pins every worker, and any rerun with the
    same value, to the same data. ``None`` takes Snowflake's clock once, at the start:
    all slices of this worker read that instant; with several instances each records
    its own (they start within moments of each other). Without Time Travel (the
    embedded warehouse, a fakesnow server) the tables are read as they are, and the
    manifest says so.
    """
    if not time_travel:
        return DataVersion(
            requested or datetime.now(UTC),
            False,
            "this warehouse has no Time Travel: the tables were read as they were",
        )
    if requested is not None:
        return DataVersion(requested, True, "every table read AT(TIMESTAMP => ...)")
    cursor = conn.cursor()
    cursor.execute("SELECT CURRENT_TIMESTAMP()")
    now = cursor.fetchone()[0]
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    return DataVersion(
        now, True, "latest: Snowflake's time at the start of this instance's extract"
    )


def feature_query(feature_set: FeatureSet, version: DataVersion) -> str:
    """The query to run: pinned to the data version where Time Travel exists."""
    return pin_to_data_version(feature_set.sql) if version.pinned else feature_set.sql


def query_params(
    as_of: date, label_window_days: int, version: DataVersion
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "label_window_days": label_window_days,
    }
    if version.pinned:
        params[DATA_VERSION_PARAM] = version.timestamp.isoformat()
    return params


def unload_to_stage(
    conn: Any,
    sql: str,
    params: Mapping[str, Any],
    feature_set: FeatureSet,
    stage: str,
    paths: Mapping[str, str],
    part_name: str,
    *,
    shard: int,
    shards: int,
    validation_fraction: float,
    test_fraction: float,
    max_file_bytes: int,
) -> dict[str, int]:
    """COPY INTO the stage, one statement per split; return the rows unloaded.

    The feature query runs once, into the shard's temporary table; each split's unload
    reads that table. ``paths`` names each split's folder in the stage
    (``<execution>/features/train``), so the files land where the step's outputs point
    and Train finds them there; ``part_name`` (``part-<host>``) prefixes this
    instance's files, so each instance writes its own file set.
    """
    schema = feature_set.schema
    rows = {}
    predicates = split_predicates(schema.entity_id, validation_fraction, test_fraction)
    with materialized_shard(
        conn, sql, params, schema.entity_id, shard, shards
    ) as table:
        cursor = conn.cursor()
        profile(cursor, table, schema, shard, shards)
        for split in SPLITS:
            statement = copy_into_statement(
                table,
                schema,
                stage,
                [*paths[split].split("/"), part_name],
                predicates[split],
                max_file_bytes,
            )
            cursor.execute(statement)
            # one row per unload: rows_unloaded, input_bytes, output_bytes
            rows[split] = sum(int(row[0]) for row in cursor.fetchall())
            log.info("unloaded %d %s rows to @%s", rows[split], split, stage)
    return rows


def write_manifest(
    directories: Mapping[str, Path], host: str, manifest: Mapping[str, Any]
) -> None:
    """The same ``manifest-<host>.json`` beside each split's Parquet files."""
    text = json.dumps(manifest, indent=2, sort_keys=True)
    for directory in directories.values():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"manifest-{host}.json").write_text(text)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="processing.extract")
    parser.add_argument("--feature-set", default="churn")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--label-window-days", type=int, default=90)
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    parser.add_argument(
        "--data-version",
        default=LATEST,
        help="read the tables as of this ISO 8601 instant, or 'latest'",
    )
    parser.add_argument(
        "--data-fingerprint",
        default=None,
        help="the Preflight step's fingerprint of the tables read (recorded only: as "
        "an argument it makes changed data a changed step cache key)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    contract = ProcessingContract.from_environment()
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        manifest = _run(args, contract)
    except SchemaError as exc:
        contract.fail(f"Extract: the feature data failed the schema check: {exc}")
        log.error("feature data failed the schema check: %s", exc)
        return 1
    except Exception as exc:
        contract.fail(f"Extract failed: {type(exc).__name__}: {exc}")
        log.exception("extract failed")
        return 1
    log.info(
        "extracted %d rows (%d positive) on %s in %.1f s: %s; data version %s",
        manifest["rows_total"],
        manifest.get("positives", -1),
        contract.current_host,
        time.monotonic() - started,
        manifest["rows"],
        manifest["data_version"]["timestamp"],
    )
    return 0


def _run(args: argparse.Namespace, contract: ProcessingContract) -> dict[str, Any]:
    from stack.config import load_job_config
    from stack.resources import build_warehouse

    config = load_job_config()  # what the job's request carries, nothing else
    settings = config.extract
    requested = parse_data_version(args.data_version)
    feature_set = load_feature_set(args.feature_set, config.features.directory)
    shard, shards = contract.host_index, len(contract.hosts)
    output = contract.path(args.output_dir)
    directories = {s: output / s for s in SPLITS}
    part_name = f"part-{contract.current_host}"
    stage_path = (
        _stage_paths(contract, config.artifact_root)
        if settings.route == "copy_into"
        else {}
    )
    warehouse = build_warehouse(config)
    log_first_read(log, f"the feature query of {feature_set.name}")
    with warehouse.connect() as conn:
        version = resolve_data_version(requested, warehouse.time_travel, conn)
        sql = feature_query(feature_set, version)
        params = query_params(args.as_of, args.label_window_days, version)
        log.info(
            "extracting %s on %s (shard %d of %d) as of %s, data version %s (%s)",
            feature_set.name,
            contract.current_host,
            shard + 1,
            shards,
            args.as_of,
            version.timestamp.isoformat(),
            "pinned" if version.pinned else "not pinned",
        )
        manifest: dict[str, Any] = {
            "feature_set": feature_set.name,
            "query_sha256": query_sha256(feature_set.sql),
            "schema": feature_set.schema.to_dict(),
            "parameters": {
                "as_of": args.as_of.isoformat(),
                "label_window_days": args.label_window_days,
                "validation_fraction": args.validation_fraction,
                "test_fraction": args.test_fraction,
            },
            "data_version": version.to_dict(),
            "data_fingerprint": args.data_fingerprint,
            "route": settings.route,
            "host": contract.current_host,
            "shard": shard,
            "shards": shards,
        }
        if settings.route == "copy_into":
            rows = unload_to_stage(
                conn,
                sql,
                params,
                feature_set,
                str(settings.stage),
                stage_path,
                part_name,
                shard=shard,
                shards=shards,
                validation_fraction=args.validation_fraction,
                test_fraction=args.test_fraction,
                max_file_bytes=settings.max_file_bytes,
            )
            manifest["stage"] = settings.stage
        else:
            writers = SplitWriters(directories, part_name, settings.row_group_rows)
            result = stream_features(
                conn,
                sql,
                params,
                feature_set.schema,
                writers,
                shard=shard,
                shards=shards,
                slice_rows=settings.slice_rows,
                validation_fraction=args.validation_fraction,
                test_fraction=args.test_fraction,
            )
            rows = result.rows
            manifest.update(
                positives=result.positives,
                slices=result.slices,
                slice_rows=settings.slice_rows,
                row_group_rows=settings.row_group_rows,
            )
    manifest["rows"] = rows
    manifest["rows_total"] = sum(rows.values())
    write_manifest(directories, contract.current_host, manifest)
    return manifest


def _stage_paths(contract: ProcessingContract, artifact_root: str) -> dict[str, str]:
    """Where in the stage each split goes: the step's own output S3 URIs (from the
    job's config), relative to the stage's URL, which is the artifact root."""
    uris = contract.output_uris()
    root = artifact_root.rstrip("/") + "/"
    paths = {}
    for split in SPLITS:
        uri = uris.get(split, "")
        if not uri.startswith(root):
            raise ValueError(
                f"route copy_into: output {split!r} ({uri or 'missing'}) is not under "
                f"the stage's URL {root}"
            )
        paths[split] = uri[len(root) :].strip("/")
    return paths


if __name__ == "__main__":
    run_process(main)
