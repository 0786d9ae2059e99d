"""Extract benchmark: rows/s and peak RSS of ways to move a feature table out of
Snowflake into files, against a fakesnow server through the real connector.

    .venv/bin/python -m benchmarks.extract            # 200k and 2M rows
    .venv/bin/python -m benchmarks.extract --quick    # 2k and 20k rows, seconds
    .venv/bin/python -m benchmarks.extract --json out.json
    .venv/bin/python -m benchmarks.extract --sizes 200000 --methods c d \
        --events-per-row 10 --slice-rows 20000     # an aggregating feature query

Methods:
  a  fetchall() -> DataFrame -> CSV        (what the public samples do)
  b  fetch_pandas_all() -> Parquet
  c  ours, 1 worker: slices of the query -> Arrow -> ParquetWriter (processing.stream)
  d  ours, 2 workers, each its shard (two processes at once)
  floor  DuckDB writing the same rows to Parquet in-process (no server, no connector)

The source is a table of the demo feature query's shape (customer id, the 19 churn
features, the label: 21 columns of integers and doubles, some nullable) built on the
server with generator(), so every size is made in seconds. With ``--events-per-row K``
the feature query also aggregates an events table of K rows per entity (a join on a
GROUP BY, as a real feature query does), so running it more than once costs something;
for every method the report counts the statements that embed the feature query (the
query's executions). Each measurement gets a fresh
fakesnow server (it never gives memory back) and runs the extracting code in its own
process, which reports its own time (from connecting to the last byte written) and its
peak RSS (``ru_maxrss``); for (d) the time spans both workers and the RSS is the larger.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = "BENCH_FEATURES"
EVENTS = "BENCH_EVENTS"
METHODS = ("a", "b", "c", "d")
LABELS = {
    "a": "(a) fetchall -> DataFrame -> CSV",
    "b": "(b) fetch_pandas_all -> Parquet",
    "c": "(c) ours, 1 worker",
    "d": "(d) ours, 2 workers",
    "floor": "floor: DuckDB -> Parquet in-process",
}


def _columns() -> list[tuple[str, str]]:
    """(name, SQL over the row number ``i``) for the 21 columns, in both dialects."""
    from features import load_feature_set

    schema = load_feature_set("churn").schema
    columns = [(schema.entity_id, "i")]
    for n, feature in enumerate(schema.features, start=1):
        if feature.dtype == "int":
            value = f"(i * {7 + n} + {n}) % {100 + 37 * n}"
        else:
            value = f"((i * {13 + n} + {n}) % 10007) / 97.0"
        if feature.nullable:
            value = f"CASE WHEN i % {5 + n} = 0 THEN NULL ELSE {value} END"
        columns.append((feature.name, value))
    columns.append((schema.label, "CASE WHEN i % 7 = 0 THEN 1 ELSE 0 END"))
    return columns


def _select(source: str) -> str:
    body = ",\n  ".join(f"{expr} AS {name}" for name, expr in _columns())
    return f"SELECT\n  {body}\nFROM {source}"


def feature_query(events_per_row: int) -> str:
    """The benchmark's feature query: the table, or the table joined to an aggregate."""
    if not events_per_row:
        return f"SELECT * FROM {TABLE}"
    return (
        f"SELECT f.* FROM {TABLE} AS f\n"
        "JOIN (SELECT customer_id AS event_customer, COUNT(*) AS events, "
        f"SUM(amount) AS spend\n      FROM {EVENTS} GROUP BY customer_id) AS e\n"
        "  ON e.event_customer = f.customer_id\n"
        "WHERE e.events > 0 AND e.spend >= 0"
    )


# ---------------------------------------------------------------- child processes


class CountingConnection:
    """A connection that counts the statements embedding ``marker`` (the feature
    query's text): how many times the warehouse runs the feature query."""

    def __init__(self, conn: Any, marker: str) -> None:
        self._conn = conn
        self.marker = marker
        self.executions = 0

    def cursor(self) -> Any:
        return _CountingCursor(self, self._conn.cursor())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _CountingCursor:
    def __init__(self, owner: CountingConnection, cursor: Any) -> None:
        self._owner = owner
        self._cursor = cursor

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if self._owner.marker in sql:
            self._owner.executions += 1
        return self._cursor.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _connect(port: int) -> Any:
    import snowflake.connector

    return snowflake.connector.connect(
        account="fakesnow",
        user="fake",
        password="fake",
        host="127.0.0.1",
        port=port,
        protocol="http",
        database="BENCH",
        schema="PUBLIC",
        login_timeout=30,
        network_timeout=1800,
    )


def _run_method(
    method: str,
    port: int,
    out: Path,
    shard: int,
    shards: int,
    slice_rows: int,
    events_per_row: int,
) -> dict[str, Any]:
    import warnings

    import pandas as pd

    from features import FeatureSchema, load_feature_set
    from processing.stream import SPLITS, SplitWriters, stream_features

    warnings.filterwarnings("ignore")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    sql = feature_query(events_per_row)
    conn = CountingConnection(_connect(port), sql)
    rows = 0
    try:
        cursor = conn.cursor()
        if method == "a":
            cursor.execute(sql)
            records = cursor.fetchall()
            frame = pd.DataFrame(records, columns=[d[0] for d in cursor.description])
            del records
            frame.to_csv(out / "features.csv", index=False)
            rows = len(frame)
        elif method == "b":
            cursor.execute(sql)
            frame = cursor.fetch_pandas_all()
            frame.to_parquet(out / "features.parquet", index=False)
            rows = len(frame)
        else:
            schema: FeatureSchema = load_feature_set("churn").schema
            writers = SplitWriters(
                {s: out / s for s in SPLITS}, f"part-{shard}", 100_000
            )
            result = stream_features(
                conn,
                sql,
                {},
                schema,
                writers,
                shard=shard,
                shards=shards,
                slice_rows=slice_rows,
            )
            rows = result.total
    finally:
        conn.close()
    ended = time.time()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": rows,
        "start": started,
        "end": ended,
        "peak_mb": peak_kib / 1024,
        "executions": conn.executions,
    }


def _run_floor(rows: int, out: Path) -> dict[str, Any]:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE t AS {_select(f'(SELECT range AS i FROM range({rows}))')}"
    )
    started = time.time()
    con.execute(f"COPY t TO '{out / 'floor.parquet'}' (FORMAT PARQUET)")
    ended = time.time()
    (written,) = con.execute(
        f"SELECT COUNT(*) FROM '{out / 'floor.parquet'}'"
    ).fetchall()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": int(written[0]),
        "start": started,
        "end": ended,
        "peak_mb": peak_kib / 1024,
        "executions": 0,
    }


# ---------------------------------------------------------------- the parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server:
    """A fresh fakesnow server holding the source table of ``rows`` rows (and
    ``events_per_row`` events per row of it)."""

    def __init__(self, rows: int, events_per_row: int = 0) -> None:
        self.rows = rows
        self.events_per_row = events_per_row
        self.port = free_port()

    def __enter__(self) -> _Server:
        executable = Path(sys.executable).with_name("fakesnow")
        self.process = subprocess.Popen(
            [str(executable), "-s", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.__exit__()
                raise RuntimeError("the fakesnow server did not start")
            time.sleep(0.1)
        conn = _connect(self.port)
        try:
            source = (
                f"(SELECT SEQ4() AS i FROM TABLE(GENERATOR(ROWCOUNT => {self.rows})))"
            )
            conn.cursor().execute(
                f"CREATE OR REPLACE TABLE {TABLE} AS {_select(source)}"
            )
            if self.events_per_row:
                events = self.rows * self.events_per_row
                conn.cursor().execute(
                    f"CREATE OR REPLACE TABLE {EVENTS} AS "
                    f"SELECT MOD(SEQ4(), {self.rows}) AS customer_id, "
                    "MOD(SEQ4(), 997) / 10.0 AS amount "
                    f"FROM TABLE(GENERATOR(ROWCOUNT => {events}))"
                )
        finally:
            conn.close()
        return self

    def __exit__(self, *_: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.extract", "--child", *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def _collect(children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    results = []
    for child in children:
        stdout, _ = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"a benchmark child failed with code {child.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@dataclass
class Measurement:
    case: str
    method: str
    rows: int
    seconds: float
    peak_mb: float
    executions: int = 1

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def measure(
    method: str, rows: int, slice_rows: int, workdir: Path, events_per_row: int = 0
) -> Measurement:
    out = workdir / f"{method}-{rows}"
    if method == "floor":
        (result,) = _collect([_child(["floor", str(rows), str(out)])])
        results = [result]
    else:
        shards = 2 if method == "d" else 1
        with _Server(rows, events_per_row) as server:
            children = [
                _child(
                    [
                        method,
                        str(rows),
                        str(out),
                        str(server.port),
                        str(shard),
                        str(shards),
                        str(slice_rows),
                        str(events_per_row),
                    ]
                )
                for shard in range(shards)
            ]
            results = _collect(children)
    written = sum(r["rows"] for r in results)
    if written != rows:
        raise RuntimeError(f"{method} wrote {written} rows, expected {rows}")
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    peak = max(r["peak_mb"] for r in results)
    executions = sum(r["executions"] for r in results)
    return Measurement(f"{method}@{rows}", method, rows, seconds, peak, executions)


def _report(measurements: list[Measurement], sizes: list[int]) -> str:
    lines = [
        f"{'method':40} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak MB':>8} "
        f"{'x speed vs (a)':>15} {'query runs':>10}"
    ]
    by = {(m.method, m.rows): m for m in measurements}
    for size in sizes:
        base = by.get(("a", size))
        for method in (*METHODS, "floor"):
            m = by.get((method, size))
            if m is None:
                continue
            ratio = m.rows_per_s / base.rows_per_s if base else float("nan")
            lines.append(
                f"{LABELS[method]:40} {m.rows:>10,} {m.seconds:>8.2f} "
                f"{m.rows_per_s:>10,.0f} {m.peak_mb:>8.0f} {ratio:>14.1f}x "
                f"{m.executions:>10}"
            )
        lines.append("")
    small, large = min(sizes), max(sizes)
    lines.append(f"peak RSS at {large:,} rows / at {small:,} rows:")
    for method in (*METHODS, "floor"):
        if (method, small) in by and (method, large) in by:
            growth = by[(method, large)].peak_mb / by[(method, small)].peak_mb
            lines.append(f"  {LABELS[method]:38} {growth:.2f}x")
    c, a, d = by.get(("c", large)), by.get(("a", large)), by.get(("d", large))
    c_small = by.get(("c", small))
    lines.append("")
    lines.append("goals (issue 3), at the larger size:")
    if c and a:
        speed = c.rows_per_s / a.rows_per_s
        lines.append(f"  (c) >= 6x faster than (a): {speed:.1f}x -> {_met(speed >= 6)}")
    if c and c_small:
        growth = c.peak_mb / c_small.peak_mb
        lines.append(
            f"  (c) peak RSS <= 1.2x its peak at {small:,}: {growth:.2f}x "
            f"-> {_met(growth <= 1.2)}"
        )
    if c and d:
        speed = d.rows_per_s / c.rows_per_s
        lines.append(f"  (d) faster than (c): {speed:.2f}x -> {_met(speed > 1)}")
    return "\n".join(lines)


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child_main(argv[1:])
    parser = argparse.ArgumentParser(prog="benchmarks.extract")
    parser.add_argument("--quick", action="store_true", help="2k and 20k rows")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "floor"])
    parser.add_argument(
        "--slice-rows", type=int, default=None, help="ours: rows per slice"
    )
    parser.add_argument(
        "--events-per-row",
        type=int,
        default=0,
        help="the feature query also aggregates this many events per row (0: none)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([2_000, 20_000] if args.quick else [200_000, 2_000_000])
    # the default of extract.slice_rows; --quick scales it down with the sizes
    from stack.config import ExtractConfig

    slice_rows = args.slice_rows or (
        2_500 if args.quick else ExtractConfig().slice_rows
    )
    measurements = []
    # the machine is shared: the load says how far the times can be trusted
    load_start = os.getloadavg()
    print(f"load average at start: {_load(load_start)} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        for size in sizes:
            for method in args.methods:
                m = measure(method, size, slice_rows, Path(tmp), args.events_per_row)
                print(
                    f"  {LABELS[method]:40} {size:>10,} rows  {m.seconds:7.2f} s  "
                    f"{m.peak_mb:6.0f} MB  {m.executions} query run(s)  "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                measurements.append(m)
    load_end = os.getloadavg()
    print(f"load average at end: {_load(load_end)}")
    print()
    print(f"slice_rows for ours: {slice_rows:,}")
    if args.events_per_row:
        print(f"feature query aggregates {args.events_per_row} events per row")
    print(_report(measurements, sizes))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "extract",
                    "events_per_row": args.events_per_row,
                    "load_average": {
                        "start": [round(x, 2) for x in load_start],
                        "end": [round(x, 2) for x in load_end],
                        "cpus": os.cpu_count(),
                    },
                    "results": [
                        {
                            "case": m.case,
                            "rows": m.rows,
                            "seconds": round(m.seconds, 4),
                            "rows_per_s": round(m.rows_per_s, 1),
                            "peak_rss_mb": round(m.peak_mb, 1),
                            "query_executions": m.executions,
                        }
                        for m in measurements
                    ],
                },
                indent=2,
            )
        )
    return 0


def _child_main(argv: list[str]) -> int:
    method, rows, out = argv[0], int(argv[1]), Path(argv[2])
    if method == "floor":
        result = _run_floor(rows, out)
    else:
        port, shard, shards, slice_rows, events = (int(v) for v in argv[3:8])
        result = _run_method(method, port, out, shard, shards, slice_rows, events)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
