"""Stream the feature query from Snowflake into Parquet, one slice at a time.

Each worker runs the feature query once, restricted to its shard of the entities, into
a temporary table of its session (``materialized_shard``); it then reads that table in
slices (hash buckets of the entity id, ``processing.extract_sql``): each slice is
fetched as Arrow, checked and cast against the feature schema, split by a hash of the
entity id and appended to one Parquet file per split with bounded row groups. The next
slice is fetched while one is written, so no process holds more than two slices.
Slicing in SQL bounds memory on every server: Snowflake splits a large result into
chunks, but a fakesnow server answers with one batch, so reading the one result through
the connector's batches would bound nothing there. Slicing the table rather than the
query keeps the warehouse from aggregating the sources once per slice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import FeatureSchema, SchemaError
from processing.extract_sql import (
    drop_table_statement,
    shard_table_statement,
    table_columns_query,
    table_count_query,
    table_slice_query,
)

log = logging.getLogger("processing.extract")
SPLITS = ("train", "validation", "test")


def assign_split(
    entity_ids: pd.Series | pa.Array | pa.ChunkedArray,
    validation_fraction: float,
    test_fraction: float,
) -> np.ndarray:
    """Split by a stable hash of the entity id: same entity, same split, every run."""
    codes = split_codes(entity_hashes(entity_ids), validation_fraction, test_fraction)
    return np.asarray(SPLITS)[codes]


def split_codes(
    hashed: np.ndarray, validation_fraction: float, test_fraction: float
) -> np.ndarray:
    """Index into ``SPLITS`` of each hashed entity id (``entity_hashes``)."""
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    position = (hashed % np.uint64(10_000)).astype(np.float64) / 10_000
    codes = np.zeros(len(hashed), dtype=np.int8)
    codes[position < test_fraction + validation_fraction] = SPLITS.index("validation")
    codes[position < test_fraction] = SPLITS.index("test")
    return codes


def entity_hashes(entity_ids: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``pd.util.hash_pandas_object(ids.astype(str), index=False)``, the hash the
    splits have always used, computed without pandas' slow steps where that gives
    the same bits.

    Integer and text ids without nulls are cast to text by Arrow (the same decimal
    digits as ``str``) and hashed without pandas' categorizing pass (which only
    saves time when values repeat; entity ids do not). Anything else (nulls,
    floats, mixed objects) goes the original way, so every id keeps its split.
    """
    arrow = _plain_ids(entity_ids)
    if arrow is None:
        series = (
            entity_ids if isinstance(entity_ids, pd.Series) else entity_ids.to_pandas()
        )
        return pd.util.hash_pandas_object(series.astype(str), index=False).to_numpy()
    text = pc.cast(arrow, pa.string()).to_numpy(zero_copy_only=False)
    return pd.util.hash_array(text, categorize=False)


def _plain_ids(
    entity_ids: pd.Series | pa.Array | pa.ChunkedArray,
) -> pa.Array | pa.ChunkedArray | None:
    """``entity_ids`` as Arrow when they are integers or text with no nulls."""
    arrow: pa.Array | pa.ChunkedArray
    if isinstance(entity_ids, pd.Series):
        if entity_ids.dtype.kind not in "iuO":
            return None
        try:
            arrow = pa.Array.from_pandas(entity_ids)
        except (pa.ArrowException, TypeError, ValueError):
            return None
    else:
        arrow = entity_ids
    kind = arrow.type
    plain = (
        pa.types.is_integer(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )
    return arrow if plain and arrow.null_count == 0 else None


def fetch_arrow(cursor: Any) -> Iterator[pa.Table]:
    """The executed query's result as Arrow tables, one per result batch."""
    if hasattr(cursor, "fetch_arrow_batches"):  # snowflake-connector-python
        yield from cursor.fetch_arrow_batches()
        return
    # fakesnow 0.12's in-process cursor has no fetch_arrow_* and its result batches'
    # to_arrow() raises NotImplementedError; one pandas frame per slice is bounded too.
    frame = cursor.fetch_pandas_all()
    if len(frame):
        yield pa.Table.from_pandas(frame, preserve_index=False)


@contextlib.contextmanager
def materialized_shard(
    conn: Any,
    sql: str,
    params: Mapping[str, Any],
    entity_id: str,
    shard: int,
    shards: int,
) -> Iterator[str]:
    """Run the feature query once for this shard into a temporary table; yield its name.

    The table lives in this session only (another worker's session never sees it) and
    is dropped on the way out; if the drop fails, the session's end removes it.
    """
    table = f"EXTRACT_SHARD_{uuid.uuid4().hex[:12].upper()}"
    cursor = conn.cursor()
    try:
        cursor.execute(
            shard_table_statement(sql, entity_id, shard, shards, table), dict(params)
        )
    except Exception as exc:
        if "privilege" in str(exc).lower():
            raise PermissionError(
                f"cannot create the temporary table {table} for this worker's shard "
                f"({exc}): grant the extract's role CREATE TABLE on the connection's "
                "schema (the table is temporary: nothing outlives the session)"
            ) from exc
        raise
    log.info(
        "ran the feature query once for shard %d of %d into %s",
        shard + 1,
        shards,
        table,
    )
    try:
        yield table
    finally:
        try:
            cursor.execute(drop_table_statement(table))
        except Exception as exc:  # the session's end drops it anyway
            log.warning("could not drop the temporary table %s: %s", table, exc)
        cursor.close()


def profile(
    cursor: Any,
    table: str,
    schema: FeatureSchema,
    shard: int,
    shards: int,
) -> tuple[int, dict[str, int]]:
    """Rows of this shard and non-null values per feature, counted in Snowflake on the
    shard's table (``materialized_shard``).

    Checks the contract before anything is written: missing columns, no rows, a
    feature null in every row.
    """
    cursor.execute(table_columns_query(table))
    columns = [d[0].lower() for d in cursor.description]
    missing = [c for c in schema.columns if c not in columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    cursor.execute(table_count_query(table, schema.feature_names))
    row = cursor.fetchone()
    total = int(row[0])
    non_null = {
        name: int(v) for name, v in zip(schema.feature_names, row[1:], strict=True)
    }
    if total == 0 and shards > 1:
        raise SchemaError(f"the feature query returned no rows for shard {shard}")
    schema.check_totals(total, non_null)
    return total, non_null


class SplitWriters:
    """One Parquet file per split, appended slice by slice; removed on failure."""

    def __init__(
        self, directories: Mapping[str, Path], part_name: str, row_group_rows: int
    ) -> None:
        self.paths = {s: directories[s] / f"{part_name}.parquet" for s in SPLITS}
        self.row_group_rows = row_group_rows
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schema: pa.Schema | None = None

    def write(self, split: str, table: pa.Table) -> None:
        self._schema = table.schema
        writer = self._writers.get(split)
        if writer is None:
            path = self.paths[split]
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._writers[split] = pq.ParquetWriter(path, table.schema)
        if len(table):
            writer.write_table(table, row_group_size=self.row_group_rows)

    def close(self) -> None:
        """Finish every file; a split that got no rows still gets an empty file."""
        if self._schema is not None:
            for split in SPLITS:
                if split not in self._writers:
                    self.write(split, self._schema.empty_table())
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def discard(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


@dataclass
class StreamResult:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    positives: int = 0
    slices: int = 0
    batches: int = 0
    expected_rows: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def stream_features(
    conn: Any,
    sql: str,
    params: Mapping[str, Any],
    schema: FeatureSchema,
    writers: SplitWriters,
    *,
    shard: int = 0,
    shards: int = 1,
    slice_rows: int = 100_000,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> StreamResult:
    """Write this shard's rows to ``writers`` slice by slice; return the counts.

    The feature query runs once (into the shard's temporary table); the slices read
    that table. Raises SchemaError (after removing what was written) when the data
    breaks the feature schema.
    """
    result = StreamResult()
    try:
        with materialized_shard(
            conn, sql, params, schema.entity_id, shard, shards
        ) as source:
            _stream_slices(
                conn,
                source,
                schema,
                writers,
                result,
                shard=shard,
                shards=shards,
                slice_rows=slice_rows,
                validation_fraction=validation_fraction,
                test_fraction=test_fraction,
            )
    except BaseException:
        writers.discard()
        raise
    writers.close()
    return result


def _stream_slices(
    conn: Any,
    source: str,
    schema: FeatureSchema,
    writers: SplitWriters,
    result: StreamResult,
    *,
    shard: int,
    shards: int,
    slice_rows: int,
    validation_fraction: float,
    test_fraction: float,
) -> None:
    """Read the shard's table ``source`` slice by slice into ``writers``."""
    cursor = conn.cursor()
    try:
        result.expected_rows, _ = profile(cursor, source, schema, shard, shards)
    finally:
        cursor.close()
    non_null = dict.fromkeys(schema.feature_names, 0)
    result.slices = max(1, math.ceil(result.expected_rows / slice_rows))

    def fetch(slice_: int) -> list[pa.Table]:
        query = table_slice_query(
            source, schema.entity_id, shard, shards, slice_, result.slices
        )
        return _fetch_slice(conn, query, schema)

    started = time.monotonic()
    # The next slice is fetched (the warehouse's work, the transfer, the decoding)
    # while this one is split and written, so the two overlap; one fetch at a time,
    # so at most two slices are held: the one written and the one arriving.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-fetch") as ahead:
        pending = ahead.submit(fetch, 0)
        for slice_ in range(result.slices):
            tables = pending.result()
            if slice_ + 1 < result.slices:
                pending = ahead.submit(fetch, slice_ + 1)
            while tables:
                table = tables.pop(0)
                _write_batch(
                    table, schema, writers, result, validation_fraction, test_fraction
                )
                for name, count in schema.non_null_counts(table).items():
                    non_null[name] += count
                del table
            log.info(
                "slice %d/%d: %d of %d rows written (%.0f rows/s)",
                slice_ + 1,
                result.slices,
                result.total,
                result.expected_rows,
                result.total / max(time.monotonic() - started, 1e-9),
            )
    schema.check_totals(result.total, non_null)


def _fetch_slice(conn: Any, query: str, schema: FeatureSchema) -> list[pa.Table]:
    """One slice's rows, checked and cast to the feature schema, batch by batch."""
    # a cursor per slice, closed after it: the connector keeps a result until the
    # cursor's next query, so one slice's result would otherwise outlive it
    cursor = conn.cursor()
    try:
        cursor.execute(query)
        return [schema.conform_arrow(batch) for batch in fetch_arrow(cursor)]
    finally:
        cursor.close()


def _write_batch(
    table: pa.Table,
    schema: FeatureSchema,
    writers: SplitWriters,
    result: StreamResult,
    validation_fraction: float,
    test_fraction: float,
) -> None:
    codes = split_codes(
        entity_hashes(table.column(schema.entity_id)),
        validation_fraction,
        test_fraction,
    )
    for code, split in enumerate(SPLITS):
        part = table.filter(pa.array(codes == code))
        writers.write(split, part)
        result.rows[split] += len(part)
    result.positives += int(pc.sum(table.column(schema.label)).as_py() or 0)
    result.batches += 1
