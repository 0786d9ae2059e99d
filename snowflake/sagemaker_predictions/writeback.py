"""Score new or changed entities through the endpoint and MERGE them into PREDICTIONS.

The job reads the feature query the pipeline trains on (as of a date) together with a
fingerprint of each entity's features (``templates.features_hash_sql``, the same
definition the scheduled procedure uses), and keeps only the entities that have no
score for that date yet, whose features changed, or that another model scored. It
sends their features to the endpoint in batches under the payload limit, stages the
scores with ``write_pandas`` in a temporary table and merges them into PREDICTIONS
keyed by (entity id, as-of date) in one transaction. A rerun finds nothing new and
changes nothing; a run that stops anywhere before COMMIT leaves PREDICTIONS as it was.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from features import FeatureSet
from processing.extract import query_features
from snowflake.sagemaker_predictions.templates import (
    PAYLOAD_LIMIT_BYTES,
    features_hash_sql,
    predictions_ddl,
)
from stack.config import validate_identifier
from stack.warehouse import Warehouse

log = logging.getLogger(__name__)
__all__ = [
    "PAYLOAD_LIMIT_BYTES",
    "WritebackError",
    "WritebackResult",
    "csv_batches",
    "endpoint_scorer",
    "merge_statements",
    "predictions_ddl",
    "write_back",
]

Scorer = Callable[[bytes], np.ndarray]
_COLUMNS = (
    "AS_OF_DATE", "SCORE", "MODEL_PACKAGE_ARN", "PIPELINE_EXECUTION_ID",
    "FEATURES_HASH", "SCORED_AT",
)  # fmt: skip
_UPDATED = ("SCORE", "MODEL_PACKAGE_ARN", "PIPELINE_EXECUTION_ID", "FEATURES_HASH",
            "SCORED_AT")  # fmt: skip


class WritebackError(Exception):
    """The endpoint's answer cannot be written back; nothing was written."""


@dataclass(frozen=True)
class WritebackResult:
    table: str
    as_of: date
    rows_scored: int  # new or changed entities, sent to the endpoint
    rows_inserted: int
    rows_updated: int
    batches: int
    rows_unchanged: int = 0  # already scored with these features by this model


def merge_statements(
    table: str, staging: str, entity_column: str, emulated: bool
) -> list[str]:
    """The statements that move the staged scores into ``table``, for one transaction.

    Real Snowflake: one MERGE. fakesnow 0.12 cannot MERGE inside BEGIN ... COMMIT
    (it implements MERGE through a temporary table of its own), so on an emulated
    warehouse the same effect is an UPDATE ... FROM then an anti-join INSERT. This is
    the one place the two differ.
    """
    for name, what in (
        (table, "writeback.table"),
        (staging, "staging table"),
        (entity_column, "entity id column"),
    ):
        validate_identifier(name, what)
    key = f"t.{entity_column} = s.{entity_column} AND t.AS_OF_DATE = s.AS_OF_DATE"
    columns = ", ".join((entity_column, *_COLUMNS))
    values = ", ".join(f"s.{c}" for c in (entity_column, *_COLUMNS))
    if not emulated:
        sets = ", ".join(f"{c} = s.{c}" for c in _UPDATED)
        return [
            f"MERGE INTO {table} AS t USING {staging} AS s\nON {key}\n"
            f"WHEN MATCHED THEN UPDATE SET {sets}\n"
            f"WHEN NOT MATCHED THEN INSERT ({columns})\nVALUES ({values})"
        ]
    sets = ", ".join(f"{c} = s.{c}" for c in _UPDATED)
    return [
        f"UPDATE {table} AS t SET {sets} FROM {staging} AS s WHERE {key}",
        f"INSERT INTO {table} ({columns}) SELECT {values} FROM {staging} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {key})",
    ]


def merge_sql(table: str, staging: str, entity_column: str) -> str:
    """The MERGE real Snowflake runs (kept for callers of the single statement)."""
    return merge_statements(table, staging, entity_column, emulated=False)[0]


def csv_batches(
    matrix: np.ndarray, batch_rows: int
) -> Iterator[tuple[int, int, bytes]]:
    """(first row, row count, CSV body) for batches of at most ``batch_rows`` rows and
    ``PAYLOAD_LIMIT_BYTES`` bytes; rows are encoded once (missing values empty).
    """
    lines = _csv_lines(matrix)
    start = 0
    while start < len(lines):
        end, size = start, 0
        while (
            end < len(lines)
            and end - start < batch_rows
            and size + len(lines[end]) <= PAYLOAD_LIMIT_BYTES
        ):
            size += len(lines[end])
            end += 1
        # a single row over the limit goes alone; the endpoint refuses it with a 413
        end = max(end, start + 1)
        yield start, end - start, b"".join(lines[start:end])
        start = end


def _csv_lines(matrix: np.ndarray) -> list[bytes]:
    """One CSV line per row, missing values empty. Arrow's writer (shortest
    round-trip digits) is 7x faster here than ``DataFrame.to_csv`` with a float
    format, which took 4.8 s of an 8.5 s job for 136k rows (benchmarks/writeback.py).
    """
    if len(matrix) == 0:
        return []
    table = pa.table(
        {
            str(i): pa.array(matrix[:, i], from_pandas=True)
            for i in range(matrix.shape[1])
        }
    )
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="none")
    )
    return buffer.getvalue().splitlines(keepends=True)


def endpoint_scorer(runtime_client: Any, endpoint_name: str) -> Scorer:
    """Score a CSV batch through ``InvokeEndpoint`` (SageMaker or the local
    endpoint).
    """

    def score(body: bytes) -> np.ndarray:
        response = runtime_client.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="text/csv",
            Accept="application/json",
            Body=body,
        )
        return np.asarray(
            orjson.loads(response["Body"].read())["predictions"], dtype=float
        )

    return score


def changed_entities_sql(
    feature_sql: str, table: str, entity_column: str, features: list[str]
) -> str:
    """The feature query narrowed to entities new or changed since the last run.

    Bound parameters: the feature query's own, plus ``%(model_package_arn)s``.
    """
    validate_identifier(table, "writeback.table")
    validate_identifier(entity_column, "entity id column")
    body = feature_sql.strip().rstrip(";")
    return (
        f"SELECT f.* FROM (\n"
        f"    SELECT q.*, {features_hash_sql(features, 'q')} AS FEATURES_HASH\n"
        f"    FROM (\n{body}\n    ) AS q\n) AS f\n"
        f"LEFT JOIN {table} AS p ON p.{entity_column} = f.{entity_column}"
        " AND p.AS_OF_DATE = TO_DATE(%(as_of)s)\n"
        f"WHERE p.{entity_column} IS NULL"
        " OR p.FEATURES_HASH IS DISTINCT FROM f.FEATURES_HASH"
        " OR p.MODEL_PACKAGE_ARN IS DISTINCT FROM %(model_package_arn)s"
    )


def write_back(
    warehouse: Warehouse,
    feature_set: FeatureSet,
    score: Scorer,
    as_of: date,
    label_window_days: int,
    table: str,
    model_package_arn: str | None,
    execution_id: str | None,
    batch_rows: int = 2000,
    entity_type: str = "NUMBER(38,0)",
) -> WritebackResult:
    """Score the entities active at ``as_of`` that are new or changed, and merge the
    scores into ``table`` in one transaction.
    """
    schema = feature_set.schema
    entity = schema.entity_id.upper()
    features = [f.upper() for f in schema.feature_names]
    params = {
        "as_of": as_of.isoformat(),
        "label_window_days": label_window_days,
        "model_package_arn": model_package_arn,
    }
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(predictions_ddl(table, entity, entity_type))
        cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE AS_OF_DATE = %s", (as_of,))
        before = int(cursor.fetchone()[0])
        frame = query_features(
            conn, changed_entities_sql(feature_set.sql, table, entity, features), params
        )
        if frame.empty:
            log.info("nothing new or changed to score in %s as of %s", table, as_of)
            return WritebackResult(table, as_of, 0, 0, 0, 0, before)
        schema.coerce(frame)
        schema.check_frame(frame, require_label=False)
        scores, batches = _score(score, schema.feature_matrix(frame), batch_rows)
        scored = pd.DataFrame(
            {
                entity: frame[schema.entity_id].to_numpy(),
                "AS_OF_DATE": pd.Series([as_of] * len(frame), dtype="object"),
                "SCORE": scores,
                "MODEL_PACKAGE_ARN": model_package_arn,
                "PIPELINE_EXECUTION_ID": execution_id,
                "FEATURES_HASH": frame["features_hash"].to_numpy(),
                "SCORED_AT": pd.Timestamp(datetime.now(UTC).replace(tzinfo=None)),
            }
        )
        staging = f"{table}_STAGE_{secrets.token_hex(4).upper()}"
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} LIKE {table}")
        try:
            warehouse.write_pandas(conn, scored, staging, use_logical_type=True)
            inserted, updated = _merge(
                cursor, merge_statements(table, staging, entity, warehouse.emulated)
            )
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {staging}")
    log.info(
        "wrote %d scores to %s (%d new, %d updated, %d unchanged)",
        len(scored),
        table,
        inserted,
        updated,
        before - updated,
    )
    return WritebackResult(
        table, as_of, len(scored), inserted, updated, batches, before - updated
    )


def _score(score: Scorer, matrix: np.ndarray, batch_rows: int) -> tuple[Any, int]:
    scores = np.empty(len(matrix), dtype=float)
    batches = 0
    for start, rows, body in csv_batches(matrix, batch_rows):
        scores[start : start + rows] = _checked(score(body), start, rows)
        batches += 1
    return scores, batches


def _merge(cursor: Any, statements: list[str]) -> tuple[int, int]:
    """Run ``statements`` in one transaction; (rows inserted, rows updated)."""
    inserted = updated = 0
    cursor.execute("BEGIN")
    try:
        for statement in statements:
            cursor.execute(statement)
            row = cursor.fetchone() or ()
            if statement.startswith("MERGE"):  # (inserted, updated)
                inserted, updated = (int(v or 0) for v in (list(row) + [0, 0])[:2])
            elif statement.startswith("UPDATE"):
                updated = int(row[0] or 0) if row else 0
            else:
                inserted = int(row[0] or 0) if row else 0
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return inserted, updated


def _checked(result: np.ndarray, start: int, rows: int) -> np.ndarray:
    """The endpoint's scores for one batch, refused unless one probability per row."""
    if result.shape != (rows,):
        raise WritebackError(
            f"the endpoint answered {result.size} scores for the {rows} rows "
            f"starting at row {start}"
        )
    if not np.all(np.isfinite(result)) or result.min() < 0 or result.max() > 1:
        raise WritebackError(
            f"the endpoint answered scores outside [0, 1] for rows {start}.."
            f"{start + rows - 1}"
        )
    return result
