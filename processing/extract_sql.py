"""SQL the Extract step sends: the shard's temporary table, its slices, Time Travel,
COPY INTO.

The feature query is the team's own text (``features/<set>/features.sql``) with named,
bound parameters (``%(as_of)s``). Everything here wraps or rewrites it; the only text
we format into SQL is integers we computed and identifiers validated by the schema or
the configuration. Values (dates, the data version) stay bound parameters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # an annotation only: the SQL helpers need no pandas (the Preflight step imports
    # them at its top)
    from features import FeatureSchema

_PARAM = re.compile(r"%\((\w+)\)s")
_SENTINEL = re.compile(r"\b__param_(\w+)__\b")
_PATH_PART = re.compile(r"^[A-Za-z0-9_=.-]{1,200}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
# Bound parameter that carries the pinned point in time.
DATA_VERSION_PARAM = "data_version"
SPLIT_BUCKETS = 10_000


def query_sha256(sql: str) -> str:
    """A fingerprint of the feature query text, recorded with every extract."""
    return hashlib.sha256(sql.encode()).hexdigest()


def _body(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def _bucket_predicate(entity_id: str, buckets: int, bucket: int) -> str:
    if not 0 <= bucket < buckets:
        raise ValueError(f"bucket {bucket} is outside 0..{buckets - 1}")
    if buckets == 1:
        return "TRUE"
    return f"MOD(ABS(HASH({entity_id})), {int(buckets)}) = {int(bucket)}"


def slice_predicate(
    entity_id: str, shard: int, shards: int, slice_: int = 0, slices: int = 1
) -> str:
    """Rows of one slice of one shard: a hash bucket of the entity id.

    Bucket ``shard + shards * slice_`` of ``shards * slices``: every bucket of a shard
    is congruent to ``shard`` modulo ``shards``, so slices never cross shards and each
    worker may choose its own number of slices.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    if not 0 <= slice_ < slices:
        raise ValueError(f"slice {slice_} is outside 0..{slices - 1}")
    return _bucket_predicate(entity_id, shards * slices, shard + shards * slice_)


def shard_table_statement(
    sql: str, entity_id: str, shard: int, shards: int, table: str
) -> str:
    """``CREATE TEMPORARY TABLE`` of this worker's shard of the feature query.

    The one statement that runs the feature query for a worker: every count, slice and
    unload afterwards scans this table instead of aggregating the sources again. A
    temporary table belongs to the session (Snowflake drops it when the session ends,
    and no other session sees it), so workers never meet each other's.
    """
    predicate = slice_predicate(entity_id, shard, shards)
    return (
        f"CREATE TEMPORARY TABLE {_identifier(table)} AS\n"
        f"SELECT * FROM (\n{_body(sql)}\n) AS features\nWHERE {predicate}"
    )


def drop_table_statement(table: str) -> str:
    return f"DROP TABLE IF EXISTS {_identifier(table)}"


def table_slice_query(
    table: str, entity_id: str, shard: int, shards: int, slice_: int, slices: int
) -> str:
    """One slice of the shard held in ``table``: the same hash bucket as slicing the
    query itself, so the slices' rows are what they were, but each is a scan of the
    table, not a run of the feature query."""
    predicate = slice_predicate(entity_id, shard, shards, slice_, slices)
    return f"SELECT * FROM {_identifier(table)} WHERE {predicate}"


def table_columns_query(table: str) -> str:
    """No rows, only the columns of ``table`` (in the cursor's description)."""
    return f"SELECT * FROM {_identifier(table)} LIMIT 0"


def table_count_query(table: str, counted: Sequence[str] = ()) -> str:
    """Rows of ``table``, and non-null values of each ``counted`` column.

    Sizes the slices and the progress, and lets the schema contract refuse an empty
    result or a feature null everywhere before anything is written.
    """
    counts = "".join(f", COUNT({name})" for name in counted)
    return f"SELECT COUNT(*){counts} FROM {_identifier(table)}"


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not an unquoted Snowflake identifier")
    return name


def pin_to_data_version(sql: str) -> str:
    """Read every table of ``sql`` at one point in time (Snowflake Time Travel).

    Adds ``AT(TIMESTAMP => TO_TIMESTAMP_TZ(%(data_version)s))`` to each table the query
    reads (CTE names are left alone), so one execution reads one version of the data
    whatever is written meanwhile. The timestamp is a bound parameter.
    """
    from sqlglot import exp

    tree = _parse(sql)
    pinned = 0
    for table in _tables_read(tree):
        if table.args.get("when"):
            continue
        table.set(
            "when",
            exp.HistoricalData(
                this="AT",
                kind="TIMESTAMP",
                expression=exp.func(
                    "TO_TIMESTAMP_TZ", exp.column(f"__param_{DATA_VERSION_PARAM}__")
                ),
            ),
        )
        pinned += 1
    if not pinned:
        raise ValueError("the feature query reads no table to pin to a data version")
    return _SENTINEL.sub(r"%(\1)s", tree.sql(dialect="snowflake", pretty=True))


def source_tables(sql: str) -> list[str]:
    """The tables ``sql`` reads (CTEs left out), each once, as Snowflake names them."""
    names: list[str] = []
    for table in _tables_read(_parse(sql)):
        table = table.copy()
        table.set("when", None)
        table.set("alias", None)
        name = table.sql(dialect="snowflake")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("the feature query reads no table")
    return names


def _parse(sql: str) -> Any:
    import sqlglot

    # sqlglot does not parse pyformat placeholders: stand them in as identifiers
    text = _PARAM.sub(lambda m: f"__param_{m.group(1)}__", _body(sql))
    return sqlglot.parse_one(text, read="snowflake")


def _tables_read(tree: Any) -> list[Any]:
    """The table nodes of ``tree`` that name stored tables, not its CTEs."""
    from sqlglot import exp

    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return [
        table
        for table in tree.find_all(exp.Table)
        if table.name and not (not table.args.get("db") and table.name.lower() in ctes)
    ]


def split_predicates(
    entity_id: str, validation_fraction: float, test_fraction: float
) -> dict[str, str]:
    """Split by a hash of the entity id in SQL (the COPY INTO route)."""
    test_end = round(test_fraction * SPLIT_BUCKETS)
    validation_end = test_end + round(validation_fraction * SPLIT_BUCKETS)
    bucket = f"MOD(ABS(HASH({entity_id})), {SPLIT_BUCKETS})"
    return {
        "train": f"{bucket} >= {validation_end}",
        "validation": f"{bucket} >= {test_end} AND {bucket} < {validation_end}",
        "test": f"{bucket} < {test_end}",
    }


def _stage_path(stage: str, parts: Sequence[str]) -> str:
    for part in parts:
        if not _PATH_PART.fullmatch(part):
            raise ValueError(
                f"stage path part {part!r} has characters outside [A-Za-z0-9_=.-]"
            )
    return "@" + "/".join([stage, *parts])


def copy_into_statement(
    table: str,
    schema: FeatureSchema,
    stage: str,
    path: Sequence[str],
    split_predicate: str,
    max_file_bytes: int,
) -> str:
    """``COPY INTO @stage/path`` of one split of the shard held in ``table``, as
    Parquet with a header.

    The last part of ``path`` is a file name prefix (``part-<host>``): Snowflake names
    the files ``part-<host>_<n>_<n>_<n>.snappy.parquet``, so each instance writes its
    own file set under each split's folder, and several Train instances can share
    them out by S3 key.

    Snowflake writes NUMBER columns to Parquet as DECIMAL, which pandas reads as Python
    ``Decimal`` objects (slow, and not numeric to the schema check), so every feature
    and the label are cast to FLOAT (exact for integers below 2**53).
    """
    columns = [schema.entity_id]
    for name in [*schema.feature_names, schema.label]:
        columns.append(f"CAST({name} AS FLOAT) AS {name}")
    select = ",\n       ".join(columns)
    return (
        f"COPY INTO {_stage_path(stage, path)}\n"
        f"FROM (\nSELECT {select}\nFROM {_identifier(table)}\n"
        f"WHERE {split_predicate}\n)\n"
        "FILE_FORMAT = (TYPE = PARQUET)\n"
        "HEADER = TRUE\n"
        f"MAX_FILE_SIZE = {int(max_file_bytes)}\n"
        "OVERWRITE = TRUE"
    )
