"""Extract step: run the feature query in Snowflake and write train/validation/test
Parquet.

Pure functions first (query, split, write), then ``main``, the thin entry point the
processing container runs as ``python -m processing.extract``. Connection settings come
from the project configuration of the environment named by ``MLOPS_ENV``; credentials
are resolved when the connection opens, never passed as arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import FeatureSchema, FeatureSet, SchemaError, load_feature_set
from processing.contract import ProcessingContract

log = logging.getLogger("processing.extract")
SPLITS = ("train", "validation", "test")
ROW_GROUP_ROWS = 100_000


def shard_query(sql: str, entity_id: str, shard: int, shards: int) -> str:
    """Wrap the feature query so this shard reads a disjoint share of the entities.

    ``shards`` and ``shard`` are integers we control; the entity column name comes from
    the validated schema, so no outside text enters the SQL.
    """
    if shards == 1:
        return sql
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    body = sql.strip().rstrip(";")
    return (
        f"SELECT * FROM (\n{body}\n) AS features "
        f"WHERE MOD(ABS(HASH({entity_id})), {int(shards)}) = {int(shard)}"
    )


def query_features(conn: Any, sql: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """Run the feature query with bound parameters; columns come back lower-case."""
    cursor = conn.cursor()
    cursor.execute(sql, dict(params))
    with warnings.catch_warnings():
        # fakesnow 0.12 warns about an extra Arrow copy on every fetch; not actionable
        # here
        warnings.simplefilter("ignore", UserWarning)
        frame = cursor.fetch_pandas_all()
    frame.columns = [c.lower() for c in frame.columns]
    return frame


def assign_split(
    entity_ids: pd.Series, validation_fraction: float, test_fraction: float
) -> np.ndarray:
    """Split by a stable hash of the entity id: same entity, same split, every run."""
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    hashed = pd.util.hash_pandas_object(entity_ids.astype(str), index=False).to_numpy()
    position = (hashed % np.uint64(10_000)).astype(np.float64) / 10_000
    return np.where(
        position < test_fraction,
        "test",
        np.where(position < test_fraction + validation_fraction, "validation", "train"),
    )


def write_splits(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    splits: np.ndarray,
    output_dirs: Mapping[str, Path],
    part_name: str,
) -> dict[str, int]:
    """Write each split's rows to ``<dir>/<part_name>.parquet``; return the row
    counts.
    """
    columns = [schema.entity_id, *schema.feature_names, schema.label]
    counts = {}
    for split in SPLITS:
        rows = frame.loc[splits == split, columns]
        directory = output_dirs[split]
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        pq.write_table(
            table, directory / f"{part_name}.parquet", row_group_size=ROW_GROUP_ROWS
        )
        counts[split] = len(rows)
    return counts


def extract(
    conn: Any,
    feature_set: FeatureSet,
    as_of: date,
    label_window_days: int,
    shard: int = 0,
    shards: int = 1,
) -> pd.DataFrame:
    """Features for one shard, checked against the schema."""
    sql = shard_query(feature_set.sql, feature_set.schema.entity_id, shard, shards)
    frame = query_features(
        conn, sql, {"as_of": as_of.isoformat(), "label_window_days": label_window_days}
    )
    feature_set.schema.coerce(frame)
    feature_set.schema.check_frame(frame)
    return frame


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="processing.extract")
    parser.add_argument("--feature-set", default="churn")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--label-window-days", type=int, default=90)
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--output-dir", default="/opt/ml/processing/output")
    parser.add_argument("--env", default=None, help="configuration environment")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    contract = ProcessingContract.from_environment()
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from stack.config import load_config
        from stack.resources import build_warehouse

        warehouse = build_warehouse(load_config(args.env))
        feature_set = load_feature_set(args.feature_set)
        with warehouse.connect() as conn:
            frame = extract(
                conn,
                feature_set,
                args.as_of,
                args.label_window_days,
                contract.host_index,
                len(contract.hosts),
            )
        splits = assign_split(
            frame[feature_set.schema.entity_id],
            args.validation_fraction,
            args.test_fraction,
        )
        output = contract.path(args.output_dir)
        counts = write_splits(
            frame,
            feature_set.schema,
            splits,
            {s: output / s for s in SPLITS},
            f"part-{contract.current_host}",
        )
    except SchemaError as exc:
        contract.fail(f"feature data failed the schema check: {exc}")
        log.error("%s", exc)
        return 1
    except Exception as exc:
        contract.fail(f"{type(exc).__name__}: {exc}")
        log.exception("extract failed")
        return 1
    positives = int(frame[feature_set.schema.label].sum())
    log.info(
        "extracted %d rows (%d positive) as of %s on %s: %s",
        len(frame),
        positives,
        args.as_of,
        contract.current_host,
        counts,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
