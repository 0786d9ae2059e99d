"""Score new or changed entities through the endpoint and MERGE them into PREDICTIONS.

The job reads the feature query the pipeline trains on (as of a date) together with a
fingerprint of each entity's features (``features_hash.features_hash_sql``, the same
definition the scheduled procedure uses), and keeps only the entities that have no
score for that date yet, whose features changed, or that another model scored, and
the entities PREDICTIONS has for that date that the query no longer returns (deleted,
or no longer active then). It sends the features to the endpoint through
``inference.client.EndpointClient`` (batches under the payload limit, several in
flight, throttling and 5xx retried), stages the scores with ``write_pandas`` in a
temporary table and merges them into PREDICTIONS keyed by (entity id, as-of date) in
one transaction, which also deletes the rows of that date whose entity is gone: the
scores of an as-of date are those of the entities the data has for it now; other
dates are history and stay. A rerun finds nothing new and changes nothing; a run that
stops anywhere before COMMIT leaves PREDICTIONS as it was.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pa_types

from features import FeatureSchema, FeatureSet, SchemaError
from inference.client import EndpointClient, EndpointInvokeError
from snowflake.sagemaker_predictions.features_hash import features_hash_sql
from snowflake.sagemaker_predictions.templates import (
    PAYLOAD_LIMIT_BYTES,
    predictions_ddl,
)
from stack.config import validate_identifier
from stack.warehouse import Warehouse

log = logging.getLogger(__name__)
__all__ = [
    "PAYLOAD_LIMIT_BYTES",
    "WritebackError",
    "WritebackResult",
    "endpoint_scorer",
    "merge_statements",
    "refuse_duplicate_keys",
    "predictions_ddl",
    "write_back",
]


class Scorer(Protocol):
    """What scores a feature matrix: ``EndpointClient`` (``endpoint_scorer``)."""

    @property
    def requests_sent(self) -> int: ...

    def predict(self, rows: np.ndarray) -> np.ndarray: ...


_COLUMNS = (
    "AS_OF_DATE", "SCORE", "MODEL_PACKAGE_ARN", "PIPELINE_EXECUTION_ID",
    "FEATURES_HASH", "SCORED_AT",
)  # fmt: skip
_UPDATED = ("SCORE", "MODEL_PACKAGE_ARN", "PIPELINE_EXECUTION_ID", "FEATURES_HASH",
            "SCORED_AT")  # fmt: skip


GONE_ID = "GONE_ID"  # changed_entities_sql's column of entities no longer returned
ENTITY_ROWS = "ENTITY_ROWS"  # ... and of the rows the query returns per entity


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
    rows_deleted: int = 0  # entities the feature query no longer returns for as_of


def merge_statements(
    table: str,
    staging: str,
    entity_column: str,
    emulated: bool,
    gone: str | None = None,
) -> list[str]:
    """The statements that move the staged scores into ``table``, for one transaction.

    ``gone``: a table of (entity id, AS_OF_DATE) keys whose rows are deleted first.

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
    deletes = []
    if gone is not None:
        validate_identifier(gone, "staging table")
        deletes = [f"DELETE FROM {table} AS t USING {gone} AS s WHERE {key}"]
    if not emulated:
        sets = ", ".join(f"{c} = s.{c}" for c in _UPDATED)
        return [
            *deletes,
            f"MERGE INTO {table} AS t USING {staging} AS s\nON {key}\n"
            f"WHEN MATCHED THEN UPDATE SET {sets}\n"
            f"WHEN NOT MATCHED THEN INSERT ({columns})\nVALUES ({values})",
        ]
    sets = ", ".join(f"{c} = s.{c}" for c in _UPDATED)
    return [
        *deletes,
        f"UPDATE {table} AS t SET {sets} FROM {staging} AS s WHERE {key}",
        f"INSERT INTO {table} ({columns}) SELECT {values} FROM {staging} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {key})",
    ]


def merge_sql(table: str, staging: str, entity_column: str) -> str:
    """The MERGE real Snowflake runs (kept for callers of the single statement)."""
    return merge_statements(table, staging, entity_column, emulated=False)[0]


def endpoint_scorer(
    runtime_client: Any,
    endpoint_name: str,
    batch_rows: int = 2000,
    concurrency: int = 1,
) -> EndpointClient:
    """A client that scores through ``InvokeEndpoint`` (SageMaker or the local
    endpoint): at most ``batch_rows`` rows and ``PAYLOAD_LIMIT_BYTES`` bytes a request,
    ``concurrency`` requests in flight.
    """
    return EndpointClient(
        runtime_client,
        endpoint_name,
        max_payload_bytes=PAYLOAD_LIMIT_BYTES,
        max_rows=batch_rows,
        concurrency=concurrency,
    )


def changed_entities_sql(
    feature_sql: str, table: str, entity_column: str, features: list[str]
) -> str:
    """The feature query narrowed to entities new or changed since the last run, and
    the entities ``table`` has for the date that the query no longer returns (their
    feature columns null, their id in ``GONE_ID``), and every row of an entity the
    query returns more than once (``ENTITY_ROWS`` > 1), changed or not, for
    ``refuse_duplicate_keys`` to name.

    Bound parameters: the feature query's own, plus ``%(model_package_arn)s``.
    """
    validate_identifier(table, "writeback.table")
    validate_identifier(entity_column, "entity id column")
    body = feature_sql.strip().rstrip(";")
    return (
        f"SELECT f.*, IFF(f.{entity_column} IS NULL, p.{entity_column}, NULL)"
        f" AS {GONE_ID} FROM (\n"
        f"    SELECT q.*, {features_hash_sql(features, 'q')} AS FEATURES_HASH,\n"
        f"        COUNT(*) OVER (PARTITION BY q.{entity_column}) AS {ENTITY_ROWS}\n"
        f"    FROM (\n{body}\n    ) AS q\n) AS f\n"
        f"FULL OUTER JOIN (\n"
        f"    SELECT {entity_column}, FEATURES_HASH, MODEL_PACKAGE_ARN FROM {table}\n"
        f"    WHERE AS_OF_DATE = TO_DATE(%(as_of)s)\n"
        f") AS p ON p.{entity_column} = f.{entity_column}\n"
        f"WHERE f.{entity_column} IS NULL OR p.{entity_column} IS NULL"
        " OR p.FEATURES_HASH IS DISTINCT FROM f.FEATURES_HASH"
        f" OR f.{ENTITY_ROWS} > 1"
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
        _check_columns(cursor, table, entity)
        cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE AS_OF_DATE = %s", (as_of,))
        before = int(cursor.fetchone()[0])
        cursor.execute(
            changed_entities_sql(feature_set.sql, table, entity, features), params
        )
        result = _fetch_arrow(cursor)
        result = result.rename_columns([c.lower() for c in result.column_names])
        returned = result.column(schema.entity_id).is_valid()
        gone_ids = result.filter(pc.invert(returned)).column(GONE_ID.lower())
        result = result.filter(returned)
        refuse_duplicate_keys(result.column(schema.entity_id), entity)
        if result.num_rows == 0 and len(gone_ids) == 0:
            log.info("nothing new or changed to score in %s as of %s", table, as_of)
            return WritebackResult(table, as_of, 0, 0, 0, 0, before)
        scores, batches = np.empty(0), 0
        if result.num_rows:
            frame = _features_frame(result, schema)
            try:
                schema.coerce(frame)
                schema.check_frame(frame, require_label=False, subset=True)
            except SchemaError as exc:
                raise WritebackError(f"the rows to score: {exc}") from exc
            scores, batches = _score(score, schema.feature_matrix(frame))
        scored = _scored_frame(
            result, entity, schema.entity_id, as_of, scores, model_package_arn,
            execution_id,
        )  # fmt: skip
        suffix = secrets.token_hex(4).upper()
        staging, gone = f"{table}_STAGE_{suffix}", f"{table}_GONE_{suffix}"
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} LIKE {table}")
        try:
            if len(scored):
                warehouse.write_pandas(conn, scored, staging, use_logical_type=True)
            if len(gone_ids):
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {gone} AS "
                    f"SELECT {entity}, AS_OF_DATE FROM {table} LIMIT 0"
                )
                keys = pd.DataFrame(
                    {entity: gone_ids.to_pandas(), "AS_OF_DATE": as_of}
                ).astype({"AS_OF_DATE": "date32[pyarrow]"})
                warehouse.write_pandas(conn, keys, gone, use_logical_type=True)
            inserted, updated, deleted = _merge(
                cursor,
                merge_statements(
                    table,
                    staging,
                    entity,
                    warehouse.emulated,
                    gone if len(gone_ids) else None,
                ),
            )
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {staging}")
            cursor.execute(f"DROP TABLE IF EXISTS {gone}")
    unchanged = before - updated - deleted
    log.info(
        "wrote %d scores to %s (%d new, %d updated, %d unchanged); deleted %d rows of "
        "entities no longer returned for %s",
        len(scored),
        table,
        inserted,
        updated,
        unchanged,
        deleted,
        as_of,
    )
    return WritebackResult(
        table, as_of, len(scored), inserted, updated, batches, unchanged, deleted
    )


def refuse_duplicate_keys(ids: pa.ChunkedArray, entity: str, shown: int = 5) -> None:
    """Raise WritebackError if an id repeats among the rows to merge.

    Snowflake refuses a MERGE whose source has two rows for one target row
    (ERROR_ON_NONDETERMINISTIC_MERGE, "Duplicate row detected during DML action");
    the embedded branch (UPDATE ... FROM) would take one silently. Checked before
    anything is scored or written, so both branches refuse it alike.
    """
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        named = ", ".join(
            f"{v['values']} ({v['counts']} rows)" for v in repeated.to_pylist()[:shown]
        )
        raise WritebackError(
            f"the feature query returns {len(repeated)} {entity} value(s) more than "
            f"once for the as-of date: {named}. A MERGE takes one source row per "
            "entity and as-of date (Snowflake: 'Duplicate row detected during DML "
            "action'); fix the query. Nothing was scored or written"
        )


def _score(score: Scorer, matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """The scores of every row, and the requests that took."""
    before = score.requests_sent
    try:
        scores = score.predict(matrix)
    except EndpointInvokeError as exc:
        raise WritebackError(f"scoring failed: {exc}") from exc
    return _checked(scores, len(matrix)), score.requests_sent - before


def _check_columns(cursor: Any, table: str, entity: str) -> None:
    """Refuse a ``table`` that exists without the columns the job writes."""
    cursor.execute(f"SELECT * FROM {table} LIMIT 0")
    present = {str(column[0]).upper() for column in cursor.description}
    missing = [c for c in (entity, *_COLUMNS) if c not in present]
    if missing:
        raise WritebackError(
            f"table {table} exists without the column(s) {', '.join(missing)} this "
            "job writes; drop or migrate it (python -m snowflake.sagemaker_predictions "
            "deploy creates it)"
        )


def _fetch_arrow(cursor: Any) -> pa.Table:
    """The executed query's whole result as one Arrow table, never through Python
    objects per value.
    """
    if hasattr(cursor, "fetch_arrow_all"):  # snowflake-connector-python
        return cursor.fetch_arrow_all(force_return_table=True)
    # fakesnow 0.12 in process has no fetch_arrow_*: its result batches' to_arrow()
    # raises, and fetch_pandas_all turns DuckDB's DECIMAL(38,0) counts into one
    # Decimal object per value (0.3 s, then 0.7 s to make them numbers again, for
    # 136k rows). Its cursor holds the result as an Arrow table already.
    table = getattr(cursor, "_arrow_table", None)
    if isinstance(table, pa.Table):
        return table
    return pa.Table.from_pandas(cursor.fetch_pandas_all(), preserve_index=False)


def _features_frame(result: pa.Table, schema: FeatureSchema) -> pd.DataFrame:
    """The entity id and the features as pandas, decimal features (NUMBER(p,s))
    as float64 already, which is what ``FeatureSchema.coerce`` makes of them.

    Missing columns stay missing, for ``check_frame`` to name.
    """
    columns = {}
    for name in (schema.entity_id, *schema.feature_names):
        if name in result.column_names:
            column = result.column(name)
            if name != schema.entity_id and pa_types.is_decimal(column.type):
                column = column.cast(pa.float64())
            columns[name] = column
    return pa.table(columns).to_pandas()


def _scored_frame(
    result: pa.Table,
    entity: str,
    entity_id: str,
    as_of: date,
    scores: np.ndarray,
    model_package_arn: str | None,
    execution_id: str | None,
) -> pd.DataFrame:
    """What is staged: one row per scored entity.

    Columns that are not plain numbers are Arrow-backed, not Python objects: the
    embedded write_pandas visits every value of an object column in Python (0.25 s
    for 136k rows), and Parquet (what write_pandas stages on Snowflake) gets the
    same types either way (DATE, strings).
    """
    rows = result.num_rows

    def repeated(value: Any, kind: pa.DataType) -> pd.api.extensions.ExtensionArray:
        return pd.arrays.ArrowExtensionArray(pa.repeat(pa.scalar(value, kind), rows))

    ids = result.column(entity_id)
    return pd.DataFrame(
        {
            entity: (
                ids.to_numpy()
                if pa_types.is_integer(ids.type) and ids.null_count == 0
                else pd.arrays.ArrowExtensionArray(ids.combine_chunks())
            ),
            "AS_OF_DATE": repeated(as_of, pa.date32()),
            "SCORE": scores,
            "MODEL_PACKAGE_ARN": repeated(model_package_arn, pa.string()),
            "PIPELINE_EXECUTION_ID": repeated(execution_id, pa.string()),
            "FEATURES_HASH": pd.arrays.ArrowExtensionArray(
                result.column("features_hash").combine_chunks()
            ),
            "SCORED_AT": pd.Timestamp(datetime.now(UTC).replace(tzinfo=None)),
        }
    )


def _merge(cursor: Any, statements: list[str]) -> tuple[int, int, int]:
    """Run ``statements`` in one transaction; rows (inserted, updated, deleted)."""
    inserted = updated = deleted = 0
    cursor.execute("BEGIN")
    try:
        for statement in statements:
            cursor.execute(statement)
            row = cursor.fetchone() or ()
            if statement.startswith("MERGE"):  # (inserted, updated)
                inserted, updated = (int(v or 0) for v in (list(row) + [0, 0])[:2])
            elif statement.startswith("UPDATE"):
                updated = int(row[0] or 0) if row else 0
            elif statement.startswith("DELETE"):
                deleted = int(row[0] or 0) if row else 0
            else:
                inserted = int(row[0] or 0) if row else 0
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return inserted, updated, deleted


def _checked(scores: np.ndarray, rows: int) -> np.ndarray:
    """The endpoint's scores, refused unless one probability per row."""
    if scores.shape != (rows,):
        raise WritebackError(
            f"the endpoint answered {scores.size} scores for {rows} rows"
        )
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise WritebackError(
            f"the endpoint answered {int(bad.sum())} scores outside [0, 1] "
            f"(the first for row {first}: {scores[first]})"
        )
    return scores
