"""A fingerprint of the data a feature query reads, so a step cache hit means same data.

SageMaker keys a cached step on its resolved request (its arguments, environment and
inputs), never on what the arguments point at: ``DataVersion=latest`` reads whatever
the tables hold when the step runs, yet its key stays the same. The Preflight step
fingerprints every table the feature query reads, at the data version, and Extract
takes the fingerprint as an argument: changed data is a changed key, and Extract and
every step after it run again; unchanged data keeps the cache.

Per table: the row count, and two order-independent aggregates of a hash of every
column of every row (``BITXOR_AGG`` and a sum of the hashes modulo a prime, so that
neither duplicated rows nor a single changed value go unseen). The same statement runs
on Snowflake and on the embedded warehouse (which has no ``HASH_AGG``); each engine's
fingerprint is its own, which is all a cache key needs. On Snowflake it is one scan
of each table per execution.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from processing.extract_sql import DATA_VERSION_PARAM

# A prime well below 2**31: the per-row residues sum exactly in a double or a NUMBER
# for up to ~4e9 rows per table.
_MODULUS = 1_000_003
_FOLD = 2**62


def quoted(identifier: str) -> str:
    """A column name as Snowflake reports it, quoted so that any name is one name."""
    return '"' + identifier.replace('"', '""') + '"'


def table_fingerprint_sql(table: str, columns: Sequence[str], pinned: bool) -> str:
    """The statement that fingerprints ``table`` (a name the feature query uses).

    ``pinned``: read the table at the bound ``%(data_version)s`` (Time Travel).
    """
    if not columns:
        raise ValueError(f"table {table} has no columns to fingerprint")
    # folded into 62 bits: DuckDB's HASH is an unsigned 64-bit integer, which a
    # client reading the result as a signed BIGINT (Arrow, the connector) cannot hold
    row_hash = f"MOD(HASH({', '.join(quoted(c) for c in columns)}), {_FOLD})"
    return (
        f"SELECT COUNT(*), BITXOR_AGG(h), SUM(MOD(h, {_MODULUS}))\n"
        f"FROM (SELECT {row_hash} AS h FROM {table}{_at(pinned)}) AS rows_hashed"
    )


def _at(pinned: bool) -> str:
    """The Time Travel clause that reads a table at the bound data version."""
    return (
        f" AT(TIMESTAMP => TO_TIMESTAMP_TZ(%({DATA_VERSION_PARAM})s))" if pinned else ""
    )


def fingerprint_tables(
    conn: Any, tables: Sequence[str], data_version: str | None
) -> dict[str, Any]:
    """Each table's row count and hashes, and the fingerprint of them all.

    ``data_version``: the ISO instant to read at (Time Travel), or None to read the
    tables as they are. Table names come from the feature query (parsed, never
    configuration); column names from Snowflake's own description of the table.
    """
    params: dict[str, Any] = (
        {DATA_VERSION_PARAM: data_version} if data_version is not None else {}
    )
    cursor = conn.cursor()
    per_table: dict[str, dict[str, Any]] = {}
    for table in tables:
        pinned = data_version is not None
        cursor.execute(f"SELECT * FROM {table}{_at(pinned)} LIMIT 0", params)
        columns = [column[0] for column in cursor.description]
        cursor.execute(table_fingerprint_sql(table, columns, pinned), params)
        rows, xor, residues = cursor.fetchone()
        per_table[table] = {
            "rows": int(rows),
            "columns": len(columns),
            "hash_xor": str(int(xor or 0)),
            "hash_sum": str(int(residues or 0)),
        }
    return {"fingerprint": combine(per_table), "tables": per_table}


def combine(per_table: Mapping[str, Any]) -> str:
    """One hex digest for all the tables' figures."""
    text = json.dumps(per_table, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
