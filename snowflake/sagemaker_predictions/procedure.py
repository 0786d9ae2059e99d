"""The scoring procedure's logic: what Snowflake runs on the task's schedule
(through ``handler.run``).

With the Snowpark DataFrame API: the feature set's rows for the as-of date, each with
its fingerprint (``features_hash.features_hash_sql``, the definition the batch job
shares); only the entities that are new or whose fingerprint changed, scored through the
external function (``snowflake_objects.function``, PREDICT_CHURN); the rows of that date
whose entity the feature query no longer returns, deleted (as the batch job does); all
of it in one ``Table.merge`` into PREDICTIONS, keyed by (entity id, AS_OF_DATE), so one
statement and one transaction. The as-of date defaults to today in UTC and SCORED_AT is
the UTC time as TIMESTAMP_NTZ, whatever the session's TIMEZONE, as the batch job writes
them.

The feature query is the feature set's own SQL text (the one definition training,
extraction and the batch job run) with the fingerprint around it, as the batch job
runs it, sent with ``session.sql``; everything after it is DataFrame
operations. Snowpark's local testing cannot run SQL text, so tests answer that one
call from the embedded Snowflake (docs/local-vs-aws.md).

The steps are plain functions over a Snowpark session and DataFrames, runnable on a
laptop with a local-testing session or a real one. Snowpark is imported inside them:
Snowflake's runtime provides it, our image does not install it. Inside Snowflake this
module and what it imports come from the release's archive
(``procedure_code``), beside the standard library and Snowpark only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snowflake.sagemaker_predictions.features_hash import features_hash_sql
from stack.identifiers import ConfigError, validate_identifier

if TYPE_CHECKING:
    from snowflake.snowpark import DataFrame, Session, Table

    from features import FeatureSet
    from stack.config import Config

SETTINGS_FILE = "sagemaker_predictions_procedure.json"
_GONE = "GONE"  # merge source column: the entity is no longer returned for the date
# working columns of changed_rows
_PREDICTED_ID, _PREDICTED_HASH = "PREDICTED_ENTITY_ID", "PREDICTED_FEATURES_HASH"
_ENTITY_ROWS = "ENTITY_ROWS"
_WRITTEN = ("AS_OF_DATE", "SCORE", "MODEL_PACKAGE_ARN", "PIPELINE_EXECUTION_ID",
            "FEATURES_HASH", "SCORED_AT")  # fmt: skip


class ProcedureError(Exception):
    """The procedure cannot score or write; PREDICTIONS was left as it was."""


@dataclass(frozen=True)
class ProcedureSettings:
    """What the procedure needs from the configuration, fixed when it is deployed
    (``SETTINGS_FILE``, uploaded beside the release's archive).

    ``feature_sql`` is the feature set's query with its ``%(as_of)s`` and
    ``%(label_window_days)s`` parameters; ``features`` are the model's input columns in
    schema order (upper case, as Snowflake names them).
    """

    table: str
    entity_column: str
    function: str
    features: tuple[str, ...]
    feature_sql: str
    label_window_days: int
    execution_id: str  # recorded with each score: 'task:<task>'

    def __post_init__(self) -> None:
        validate_identifier(self.table, "writeback.table")
        validate_identifier(self.entity_column, "entity id column")
        validate_identifier(self.function, "snowflake_objects.function")
        for name in self.features:
            validate_identifier(name, "feature")
        working = {_GONE, _PREDICTED_ID, _PREDICTED_HASH, _ENTITY_ROWS}
        clash = {self.entity_column, *self.features} & {*working, *_WRITTEN}
        if clash:
            raise ConfigError(
                f"feature set column(s) {', '.join(sorted(clash))} clash with the "
                "columns the procedure writes or works with; rename them"
            )

    @classmethod
    def from_config(cls, config: Config, feature_set: FeatureSet) -> ProcedureSettings:
        schema = feature_set.schema
        return cls(
            table=config.writeback.table,
            entity_column=schema.entity_id.upper(),
            function=config.snowflake_objects.function,
            features=tuple(f.upper() for f in schema.feature_names),
            feature_sql=feature_set.sql,
            label_window_days=int(config.features.label_window_days),
            execution_id=f"task:{config.snowflake_objects.task}",
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProcedureSettings:
        try:
            data = json.loads(text)
            data["features"] = tuple(data["features"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{SETTINGS_FILE} is not valid: {exc}") from None


@dataclass(frozen=True)
class ProcedureResult:
    table: str
    as_of: date
    scored: int  # new or changed entities sent to the external function
    inserted: int
    updated: int
    unchanged: int  # already scored for as_of with these features
    deleted: int  # entities the feature query no longer returns for as_of

    def as_dict(self) -> dict[str, Any]:
        """What the procedure returns to Snowflake (a VARIANT)."""
        return {**asdict(self), "as_of": self.as_of.isoformat()}


def parse_as_of(as_of: str | None, now: datetime) -> date:
    """``as_of`` as a date; None is ``now``'s date in UTC (never the session's
    TIMEZONE, which Snowflake's CURRENT_DATE() would use).
    """
    if as_of is None:
        return now.astimezone(UTC).date()
    try:
        return date.fromisoformat(str(as_of).strip())
    except ValueError:
        raise ProcedureError(
            f"as_of {as_of!r} is not a date: pass YYYY-MM-DD, or nothing for today "
            "(UTC)"
        ) from None


def load_settings(import_directory: Path | None = None) -> ProcedureSettings:
    """The deployed settings: ``SETTINGS_FILE`` among the procedure's IMPORTS when
    Snowflake runs it, else the project's configuration (``MLOPS_ENV``) and its
    feature set, as on a laptop.
    """
    if import_directory is None:
        # Snowflake's documented way to the files a procedure IMPORTS
        found = getattr(sys, "_xoptions", {}).get("snowflake_import_directory")
        import_directory = Path(found) if found else None
    if import_directory is not None and (import_directory / SETTINGS_FILE).is_file():
        return ProcedureSettings.from_json(
            (import_directory / SETTINGS_FILE).read_text()
        )
    from features import load_feature_set
    from stack.config import load_config

    config = load_config()
    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    return ProcedureSettings.from_config(config, feature_set)


def feature_query(settings: ProcedureSettings, as_of: date) -> str:
    """The feature set's query for ``as_of``, each row with its fingerprint
    (FEATURES_HASH), as the batch job computes it.

    The two parameters are filled in as the connector's default (pyformat) binding
    fills them for the batch job, on the client: ``%`` formatting with each value
    rendered by its type, here a date literal and an integer. No text from outside
    reaches the statement. Server-side (qmark) binding would also have to tell the
    placeholders in the query's comments (features.sql documents its parameters
    there) from those in its code.
    """
    body = settings.feature_sql.strip().rstrip(";")
    values = {
        "as_of": f"'{as_of.isoformat()}'",
        "label_window_days": str(int(settings.label_window_days)),
    }
    try:
        body = body % values
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            "the feature query can take only %(as_of)s and %(label_window_days)s as "
            f"parameters (and %% for a literal %): {exc!r}"
        ) from None
    fingerprint = features_hash_sql(list(settings.features), "q")
    return f"SELECT q.*, {fingerprint} AS FEATURES_HASH\nFROM (\n{body}\n) AS q"


def feature_rows(
    session: Session, settings: ProcedureSettings, as_of: date
) -> DataFrame:
    """The feature set's rows for ``as_of``, each with its FEATURES_HASH."""
    return session.sql(feature_query(settings, as_of))


def changed_rows(
    features: DataFrame, predictions: Table, settings: ProcedureSettings, as_of: date
) -> DataFrame:
    """The feature rows of entities without a score for ``as_of`` or whose
    fingerprint differs from the scored one; the entities PREDICTIONS has for
    ``as_of`` that ``features`` no longer returns (``GONE`` true, features null); and
    every row of an entity the feature query returns more than once, changed or
    not, for ``refuse_duplicate_keys`` to name.
    """
    from snowflake.snowpark import Window
    from snowflake.snowpark.functions import coalesce, col, count, lit

    entity = settings.entity_column
    counted = features.with_column(
        _ENTITY_ROWS, count(lit(1)).over(Window.partition_by(col(entity)))
    )
    scored = predictions.filter(col("AS_OF_DATE") == lit(as_of)).select(
        col(entity).alias(_PREDICTED_ID), col("FEATURES_HASH").alias(_PREDICTED_HASH)
    )
    joined = counted.join(scored, col(entity) == col(_PREDICTED_ID), how="full")
    changed = joined.filter(
        col(entity).is_null()
        | col(_PREDICTED_ID).is_null()
        | ~col("FEATURES_HASH").equal_null(col(_PREDICTED_HASH))
        | (col(_ENTITY_ROWS) > 1)
    )
    return changed.select(
        coalesce(col(entity), col(_PREDICTED_ID)).alias(entity),
        *[col(name) for name in settings.features],
        col("FEATURES_HASH"),
        col(entity).is_null().alias(_GONE),
    )


def refuse_duplicate_keys(frame: DataFrame, key: str, shown: int = 5) -> None:
    """Raise ProcedureError if ``key`` repeats in ``frame``.

    A MERGE whose source has two rows for one target row fails on Snowflake
    (ERROR_ON_NONDETERMINISTIC_MERGE); Snowpark's local testing accepts it silently.
    Checked here, before anything is scored or written, so both refuse it alike.
    """
    from snowflake.snowpark.functions import col, count

    repeated = (
        frame.group_by(col(key))
        .agg(count(col(key)).alias("N"))
        .filter(col("N") > 1)
        .sort(col(key))
        .limit(shown)
        .collect()
    )
    if repeated:
        ids = ", ".join(f"{row[0]} ({row[1]} rows)" for row in repeated)
        raise ProcedureError(
            f"more than one source row for {key} {ids}: the feature query returns "
            "the entity more than once (or PREDICTIONS holds it twice for the date), "
            "and a MERGE takes one source row per entity and as-of date; fix the "
            "query. Nothing was scored or written"
        )


def merge_source(
    changes: DataFrame,
    settings: ProcedureSettings,
    as_of: date,
    scored_at: datetime,
) -> DataFrame:
    """One row per entity to write: new and changed entities scored through the
    external function, gone ones with ``GONE`` true and no score.
    """
    from snowflake.snowpark.functions import call_function, col, lit
    from snowflake.snowpark.types import (
        DoubleType,
        StringType,
        TimestampTimeZone,
        TimestampType,
    )

    if scored_at.tzinfo is None:
        raise ValueError("scored_at must be timezone-aware (datetime.now(UTC))")
    naive_utc = scored_at.astimezone(UTC).replace(tzinfo=None)
    common = [
        col(settings.entity_column),
        lit(as_of).alias("AS_OF_DATE"),
        lit(None).cast(StringType()).alias("MODEL_PACKAGE_ARN"),
        lit(settings.execution_id).alias("PIPELINE_EXECUTION_ID"),
        lit(naive_utc).cast(TimestampType(TimestampTimeZone.NTZ)).alias("SCORED_AT"),
    ]
    # the external function takes FLOAT arguments; it is called only for rows it scores
    arguments = [col(name).cast(DoubleType()) for name in settings.features]
    scored = changes.filter(~col(_GONE)).select(
        *common,
        call_function(settings.function, *arguments).alias("SCORE"),
        col("FEATURES_HASH"),
        lit(False).alias(_GONE),
    )
    gone = changes.filter(col(_GONE)).select(
        *common,
        lit(None).cast(DoubleType()).alias("SCORE"),
        lit(None).cast(StringType()).alias("FEATURES_HASH"),
        lit(True).alias(_GONE),
    )
    return scored.union_all_by_name(gone)


def check_scores(source: DataFrame) -> int:
    """The number of scored rows; ProcedureError unless each score is a probability
    (the batch job refuses the endpoint's answer the same way).
    """
    from snowflake.snowpark import functions as F

    scored = source.filter(~F.col(_GONE))
    rows, present, lowest, highest = scored.agg(
        F.count(F.lit(1)), F.count(F.col("SCORE")), F.min("SCORE"), F.max("SCORE")
    ).collect()[0]
    if present != rows:
        raise ProcedureError(
            f"the external function answered no score for {rows - present} of {rows} "
            "rows; nothing was written"
        )
    if rows and not (lowest >= 0 and highest <= 1):
        raise ProcedureError(
            f"the external function answered scores outside [0, 1] (from {lowest} to "
            f"{highest}); nothing was written"
        )
    return int(rows)


def merge_predictions(
    predictions: Table,
    source: DataFrame,
    settings: ProcedureSettings,
    deletes: bool = True,
) -> tuple[int, int, int]:
    """Merge ``source`` into ``predictions`` in one statement: gone entities
    deleted, changed ones updated, new ones inserted. Rows (inserted, updated,
    deleted).

    Args:
        deletes: whether ``source`` has gone entities. Without any, the MERGE has no
            delete clause: the same statement on Snowflake, and Snowpark 1.56's local
            testing fails a delete clause when no source row matches a target row.
    """
    from snowflake.snowpark.functions import when_matched, when_not_matched

    entity = settings.entity_column
    key = (predictions[entity] == source[entity]) & (
        predictions["AS_OF_DATE"] == source["AS_OF_DATE"]
    )
    columns = (entity, *_WRITTEN)
    clauses = [when_matched(source[_GONE]).delete()] if deletes else []
    clauses += [
        when_matched().update({c: source[c] for c in _WRITTEN if c != "AS_OF_DATE"}),
        when_not_matched(~source[_GONE]).insert({c: source[c] for c in columns}),
    ]
    result = predictions.merge(source, key, clauses)
    return result.rows_inserted, result.rows_updated, result.rows_deleted


def check_predictions_table(predictions: Table, settings: ProcedureSettings) -> None:
    """Refuse a PREDICTIONS table without the columns the procedure writes."""
    present = {name.strip('"').upper() for name in predictions.columns}
    missing = [c for c in (settings.entity_column, *_WRITTEN) if c not in present]
    if missing:
        raise ProcedureError(
            f"table {settings.table} has no column(s) {', '.join(missing)}; "
            "python -m snowflake.sagemaker_predictions deploy creates it"
        )


def score_new_predictions(
    session: Session, settings: ProcedureSettings, as_of: date, now: datetime
) -> ProcedureResult:
    """Score the entities new or changed at ``as_of`` and merge them (and the
    deletions of gone entities) into PREDICTIONS; ``now`` (timezone-aware) is
    SCORED_AT, in UTC.

    The changed rows and their scores are each computed once (``cache_result``, a
    temporary table), so the checks, the counts and the MERGE see the same rows and
    the external function is called once per row.
    """
    from snowflake.snowpark.functions import col, lit

    predictions = session.table(settings.table)
    check_predictions_table(predictions, settings)
    before = int(predictions.filter(col("AS_OF_DATE") == lit(as_of)).count())
    changes = changed_rows(
        feature_rows(session, settings, as_of), predictions, settings, as_of
    ).cache_result()
    refuse_duplicate_keys(changes, settings.entity_column)
    if changes.count() == 0:
        return ProcedureResult(settings.table, as_of, 0, 0, 0, before, 0)
    gone = int(changes.filter(col(_GONE)).count())
    source = merge_source(changes, settings, as_of, now).cache_result()
    scored = check_scores(source)
    inserted, updated, deleted = merge_predictions(
        predictions, source, settings, deletes=gone > 0
    )
    return ProcedureResult(
        settings.table,
        as_of,
        scored,
        int(inserted),
        int(updated),
        before - updated - deleted,
        int(deleted),
    )
