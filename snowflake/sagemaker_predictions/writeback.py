"""Score entities through the endpoint and MERGE the scores into PREDICTIONS.

The job reads the same feature query the pipeline trains on (as of a date), sends the
features to the endpoint in batches under the invocation payload limit, stages the
scores with ``write_pandas`` in a temporary table and MERGEs them into PREDICTIONS
keyed by (entity id, as-of date). A rerun updates the same rows instead of adding new
ones, and a run that stops before the MERGE leaves PREDICTIONS untouched.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from features import FeatureSet
from processing.extract import query_features
from stack.config import validate_identifier
from stack.warehouse import Warehouse

log = logging.getLogger(__name__)
PAYLOAD_LIMIT_BYTES = 5 * 1024 * 1024  # under InvokeEndpoint's 6 MB, with headroom

Scorer = Callable[[bytes], np.ndarray]


class WritebackError(Exception):
    """The endpoint's answer cannot be written back; nothing was written."""


@dataclass(frozen=True)
class WritebackResult:
    table: str
    as_of: date
    rows_scored: int
    rows_inserted: int
    rows_updated: int
    batches: int


def predictions_ddl(table: str, entity_column: str, entity_type: str) -> str:
    """The PREDICTIONS table: one current score per entity and as-of date."""
    validate_identifier(table, "writeback.table")
    validate_identifier(entity_column, "entity id column")
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        f"    {entity_column} {entity_type} NOT NULL,\n"
        "    AS_OF_DATE DATE NOT NULL,\n"
        "    SCORE FLOAT NOT NULL,\n"
        "    MODEL_PACKAGE_ARN VARCHAR,\n"
        "    PIPELINE_EXECUTION_ID VARCHAR,\n"
        "    SCORED_AT TIMESTAMP_NTZ NOT NULL\n"
        ")"
    )


def merge_sql(table: str, staging: str, entity_column: str) -> str:
    for name, what in (
        (table, "writeback.table"),
        (staging, "staging table"),
        (entity_column, "entity id column"),
    ):
        validate_identifier(name, what)
    return (
        f"MERGE INTO {table} AS t USING {staging} AS s\n"
        f"ON t.{entity_column} = s.{entity_column} AND t.AS_OF_DATE = s.AS_OF_DATE\n"
        "WHEN MATCHED THEN UPDATE SET SCORE = s.SCORE,"
        " MODEL_PACKAGE_ARN = s.MODEL_PACKAGE_ARN,"
        " PIPELINE_EXECUTION_ID = s.PIPELINE_EXECUTION_ID, SCORED_AT = s.SCORED_AT\n"
        f"WHEN NOT MATCHED THEN INSERT ({entity_column}, AS_OF_DATE, SCORE,"
        " MODEL_PACKAGE_ARN,"
        " PIPELINE_EXECUTION_ID, SCORED_AT)\n"
        f"VALUES (s.{entity_column}, s.AS_OF_DATE, s.SCORE, s.MODEL_PACKAGE_ARN,"
        " s.PIPELINE_EXECUTION_ID, s.SCORED_AT)"
    )


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
    text = pd.DataFrame(matrix).to_csv(
        header=False, index=False, na_rep="", float_format="%.9g", lineterminator="\n"
    )
    return [line + b"\n" for line in text.encode().split(b"\n")[:-1]]


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
) -> WritebackResult:
    """Score every entity active at ``as_of`` and MERGE the scores into ``table``."""
    schema = feature_set.schema
    entity = schema.entity_id.upper()
    with warehouse.connect() as conn:
        frame = query_features(
            conn,
            feature_set.sql,
            {"as_of": as_of.isoformat(), "label_window_days": label_window_days},
        )
        schema.coerce(frame)
        schema.check_frame(frame, require_label=False)
        matrix = schema.feature_matrix(frame)
        scores = np.empty(len(frame), dtype=float)
        batches = 0
        for start, rows, body in csv_batches(matrix, batch_rows):
            scores[start : start + rows] = _checked(score(body), start, rows)
            batches += 1
        scored = pd.DataFrame(
            {
                entity: frame[schema.entity_id].to_numpy(),
                "AS_OF_DATE": pd.Series([as_of] * len(frame), dtype="object"),
                "SCORE": scores,
                "MODEL_PACKAGE_ARN": model_package_arn,
                "PIPELINE_EXECUTION_ID": execution_id,
                "SCORED_AT": pd.Timestamp(datetime.now(UTC).replace(tzinfo=None)),
            }
        )
        entity_type = (
            "NUMBER(38,0)"
            if pd.api.types.is_integer_dtype(scored[entity])
            else "VARCHAR"
        )
        cursor = conn.cursor()
        cursor.execute(predictions_ddl(table, entity, entity_type))
        staging = f"{table}_STAGE_{secrets.token_hex(4).upper()}"
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} LIKE {table}")
        try:
            warehouse.write_pandas(conn, scored, staging, use_logical_type=True)
            cursor.execute(merge_sql(table, staging, entity))
            inserted, updated = _merge_counts(cursor)
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {staging}")
    log.info(
        "wrote %d scores to %s (%d new, %d updated)",
        len(scored),
        table,
        inserted,
        updated,
    )
    return WritebackResult(table, as_of, len(scored), inserted, updated, batches)


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


def _merge_counts(cursor: Any) -> tuple[int, int]:
    row = cursor.fetchone()
    if not row:
        return 0, 0
    inserted = int(row[0]) if len(row) > 0 and row[0] is not None else 0
    updated = int(row[1]) if len(row) > 1 and row[1] is not None else 0
    return inserted, updated
