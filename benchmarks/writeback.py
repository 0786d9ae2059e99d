"""Write-back benchmark: scores into the embedded Snowflake (fakesnow, in-process).

    .venv/bin/python -m benchmarks.writeback            # 200k scores
    .venv/bin/python -m benchmarks.writeback --quick    # 3k customers, seconds
    .venv/bin/python -m benchmarks.writeback --json out.json

Cases:
  write           ours, the write path alone: N synthetic scores staged with
                  write_pandas into a temporary table, then UPDATE + anti-join INSERT in
                  one transaction (what the job runs on fakesnow; MERGE on Snowflake)
  executemany     the baseline a user would write: executemany INSERT of row tuples,
                  timed on a slice and extrapolated to N
  job             ours, the whole job: write_back() over the demo data (feature query
                  with the change filter, CSV batches through a real local inference
                  server over HTTP with boto3's sagemaker-runtime client, stage, merge)
                  and where its time went: the endpoint calls, the query, stage +
                  merge, setup (connection, DDL, checks) and Python (frames and
                  checks; the endpoint client's CSV encoding counts as endpoint time)
  query           the feature query alone (where the rest of the job's time goes)
  job_rerun       the same job again: nothing new or changed, nothing written
  per_row         scoring with one endpoint call per row, timed on a slice and
                  extrapolated to the job's row count

The job's own rows are the active customers of the demo data at the as-of date (about
70% of the customers); its figures are also given per 200k rows for the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datagen.seed import ensure_demo_data
from features import load_feature_set
from stack.endpoints import local_runtime_client
from stack.warehouse import EmbeddedWarehouse, Warehouse
from training.hyperparameters import DEFAULTS

TARGET_ROWS = 200_000
AS_OF = date(2026, 6, 30)
TRAIN_AS_OF = date(2026, 3, 31)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scores_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "CUSTOMER_ID": np.arange(rows, dtype=np.int64),
            "AS_OF_DATE": pd.Series([AS_OF] * rows, dtype="object"),
            "SCORE": rng.random(rows),
            "MODEL_PACKAGE_ARN": "arn:pkg/1",
            "PIPELINE_EXECUTION_ID": "bench",
            "FEATURES_HASH": [f"{i:032x}" for i in range(rows)],
            "SCORED_AT": pd.Timestamp(datetime(2026, 7, 1, 6, 0)),
        }
    )


def bench_write(warehouse: Any, rows: int) -> dict[str, Any]:
    from snowflake.sagemaker_predictions.writeback import (
        _merge,
        merge_statements,
        predictions_ddl,
    )

    frame = _scores_frame(rows)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(predictions_ddl("PRED_WRITE", "CUSTOMER_ID", "NUMBER(38,0)"))
        start = time.perf_counter()
        cursor.execute("CREATE TEMPORARY TABLE PRED_STAGE LIKE PRED_WRITE")
        warehouse.write_pandas(conn, frame, "PRED_STAGE", use_logical_type=True)
        inserted, _, _ = _merge(
            cursor,
            merge_statements("PRED_WRITE", "PRED_STAGE", "CUSTOMER_ID", True),
        )
        seconds = time.perf_counter() - start
    assert inserted == rows, (inserted, rows)
    return {"case": "write", "rows": rows, "seconds": seconds, "estimated": False}


def bench_executemany(warehouse: Any, rows: int, slice_rows: int) -> dict[str, Any]:
    frame = _scores_frame(slice_rows)
    # plain Python values, as a user's row tuples would be
    tuples = [
        (int(c), d, float(s), m, e, h, t.to_pydatetime())
        for c, d, s, m, e, h, t in frame.itertuples(index=False, name=None)
    ]
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("CREATE TABLE PRED_MANY LIKE PRED_WRITE")
        start = time.perf_counter()
        cursor.executemany(
            "INSERT INTO PRED_MANY VALUES (%s, %s, %s, %s, %s, %s, %s)", tuples
        )
        seconds = time.perf_counter() - start
    return {
        "case": "executemany",
        "rows": rows,
        "seconds": seconds * rows / slice_rows,
        "estimated": True,
        "measured_rows": slice_rows,
        "measured_seconds": seconds,
    }


def _train(warehouse: Any, folder: Path) -> None:
    from processing.extract import query_features
    from training.train import save_model, train_model

    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        frame = query_features(
            conn,
            feature_set.sql,
            {"as_of": TRAIN_AS_OF.isoformat(), "label_window_days": 90},
        )
    feature_set.schema.coerce(frame)
    cut = int(len(frame) * 0.8)
    model = train_model(
        frame.iloc[:cut], frame.iloc[cut:], feature_set.schema, dict(DEFAULTS)
    )
    save_model(model, folder)


class _Server:
    """The inference server (inference.server) on 127.0.0.1, two workers (an
    ml.m5.large endpoint instance has two vCPUs)."""

    def __init__(self, model_dir: Path) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference.server", "--model-dir", str(model_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(  # noqa: S310 - our own 127.0.0.1 server
                    f"http://127.0.0.1:{self.port}/ping", timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the inference server did not start")
            time.sleep(0.2)

    def client(self) -> Any:
        return local_runtime_client(f"http://127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# The job's statements by where their time belongs (the first words of each).
_PHASES = (
    ("SELECT f.*", "query"),  # the feature query with the change filter
    ("CREATE TABLE IF NOT EXISTS", "setup"),
    ("SELECT COUNT(*)", "setup"),
    ("SELECT * FROM", "setup"),  # the check of the table's columns
)


class _TimedCursor:
    """A cursor that adds each statement's time to its phase (stage + merge unless
    ``_PHASES`` says otherwise); everything else passes through.
    """

    def __init__(self, cursor: Any, seconds: dict[str, float]) -> None:
        self._cursor = cursor
        self._seconds = seconds

    def execute(self, command: str, *args: Any, **kwargs: Any) -> Any:
        phase = next(
            (name for start, name in _PHASES if command.startswith(start)),
            "stage_merge",
        )
        start = time.perf_counter()
        try:
            return self._cursor.execute(command, *args, **kwargs)
        finally:
            self._seconds[phase] += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _TimedConnection:
    def __init__(self, conn: Any, seconds: dict[str, float]) -> None:
        self.conn = conn
        self._seconds = seconds

    def cursor(self, *args: Any, **kwargs: Any) -> _TimedCursor:
        return _TimedCursor(self.conn.cursor(*args, **kwargs), self._seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class _TimedWarehouse(Warehouse):
    """The warehouse the job is given, timing its SQL by phase and write_pandas as
    staging; it does nothing else.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self.database, self.schema = warehouse.database, warehouse.schema
        self.time_travel, self.emulated = warehouse.time_travel, warehouse.emulated
        self.seconds: dict[str, float] = dict.fromkeys(
            ("setup", "query", "stage_merge"), 0.0
        )

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        start = time.perf_counter()
        with self._warehouse.connect() as conn:
            self.seconds["setup"] += time.perf_counter() - start
            yield _TimedConnection(conn, self.seconds)

    def write_pandas(self, conn: Any, frame: Any, table: str, **kwargs: Any) -> int:
        start = time.perf_counter()
        try:
            return int(self._warehouse.write_pandas(conn.conn, frame, table, **kwargs))
        finally:
            self.seconds["stage_merge"] += time.perf_counter() - start


def bench_job(warehouse: Any, score: Any, case: str) -> dict[str, Any]:
    from snowflake.sagemaker_predictions.writeback import write_back

    timed = _Timed(score)
    timed_warehouse = _TimedWarehouse(warehouse)
    start = time.perf_counter()
    result = write_back(
        timed_warehouse, load_feature_set("churn"), timed, as_of=AS_OF,
        label_window_days=90, table="PREDICTIONS", model_package_arn="arn:pkg/1",
        execution_id=case,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    spent = [timed.seconds]
    phases = timed_warehouse.seconds
    return {
        "case": case,
        "rows": result.rows_scored,
        "rows_unchanged": result.rows_unchanged,
        "seconds": seconds,
        "scoring_seconds": spent[0],
        "other_seconds": seconds - spent[0],
        # other_seconds split: connection, DDL, column check, the count before
        "setup_seconds": phases["setup"],
        # the feature query with the fingerprint and the change filter
        "query_seconds": phases["query"],
        # temporary table, write_pandas, the merge transaction, DROP
        "stage_merge_seconds": phases["stage_merge"],
        # the rest, in Python: frames and checks (CSV encoding is the client's)
        "python_seconds": seconds - spent[0] - sum(phases.values()),
        "batches": result.batches,
        "estimated": False,
    }


class _Timed:
    """A scorer that adds up the time spent in the endpoint client."""

    def __init__(self, client: Any) -> None:
        self.client, self.seconds = client, 0.0

    @property
    def requests_sent(self) -> int:
        return int(self.client.requests_sent)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return np.asarray(self.client.predict(rows))
        finally:
            self.seconds += time.perf_counter() - start


def bench_per_row(warehouse: Any, score: Any, rows: int, slice_rows: int) -> dict:
    from processing.extract import query_features

    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        frame = query_features(
            conn, feature_set.sql, {"as_of": AS_OF.isoformat(), "label_window_days": 90}
        )
    feature_set.schema.coerce(frame)
    matrix = feature_set.schema.feature_matrix(frame)[:slice_rows]
    start = time.perf_counter()
    for row in matrix:
        score.predict(row[np.newaxis, :])
    seconds = time.perf_counter() - start
    return {
        "case": "per_row",
        "rows": rows,
        "seconds": seconds * rows / len(matrix),
        "estimated": True,
        "measured_rows": len(matrix),
        "measured_seconds": seconds,
    }


def bench_query(warehouse: Any) -> dict[str, Any]:
    """The feature query alone (no change filter, no fingerprint): the floor under
    the job's "query + stage + merge" share.
    """
    from processing.extract import query_features

    feature_set = load_feature_set("churn")
    start = time.perf_counter()
    with warehouse.connect() as conn:
        frame = query_features(
            conn, feature_set.sql, {"as_of": AS_OF.isoformat(), "label_window_days": 90}
        )
    seconds = time.perf_counter() - start
    return {"case": "query", "rows": len(frame), "seconds": seconds, "estimated": False}


def run(customers: int, write_rows: int, slice_rows: int) -> list[dict[str, Any]]:
    from snowflake.sagemaker_predictions.writeback import endpoint_scorer

    with tempfile.TemporaryDirectory(prefix="bench-writeback-") as tmp:
        root = Path(tmp)
        warehouse = EmbeddedWarehouse(root / "snowflake", "MLOPS", "CHURN")
        print(f"seeding {customers:,} demo customers ...", file=sys.stderr)
        ensure_demo_data(warehouse, customers, 7)
        results = [bench_write(warehouse, write_rows)]
        results.append(bench_executemany(warehouse, write_rows, slice_rows))
        print("training a model on the demo features ...", file=sys.stderr)
        _train(warehouse, root / "model")
        server = _Server(root / "model")
        try:
            # as the job runs by default (writeback.batch_rows, .concurrency)
            score = endpoint_scorer(
                server.client(), "bench", batch_rows=2000, concurrency=4
            )
            results.append(bench_query(warehouse))
            job = bench_job(warehouse, score, "job")
            results.append(job)
            results.append(bench_job(warehouse, score, "job_rerun"))
            one_by_one = endpoint_scorer(server.client(), "bench", batch_rows=1)
            results.append(
                bench_per_row(warehouse, one_by_one, job["rows"], slice_rows)
            )
        finally:
            server.stop()
    return results


def _report(results: list[dict[str, Any]]) -> str:
    by = {r["case"]: r for r in results}
    many_rate = by["executemany"]["seconds"] / by["executemany"]["rows"]  # s per row
    lines = [
        f"{'case':<12} {'rows':>9} {'seconds':>10} {'rows/s':>12}  note",
    ]
    for r in results:
        rate = r["rows"] / r["seconds"] if r["seconds"] and r["rows"] else 0.0
        note = (
            f"estimated from {r['measured_rows']:,} rows in "
            f"{r['measured_seconds']:.2f} s"
            if r.get("estimated")
            else ""
        )
        if "scoring_seconds" in r:
            note = (
                f"{r['rows_unchanged']:,} unchanged; endpoint "
                f"{r['scoring_seconds']:.2f} s in {r['batches']} calls, "
                f"other {r['other_seconds']:.2f} s (query "
                f"{r['query_seconds']:.2f}, stage + merge "
                f"{r['stage_merge_seconds']:.2f}, setup {r['setup_seconds']:.2f}, "
                f"Python {r['python_seconds']:.2f})"
            )
        lines.append(
            f"{r['case']:<12} {r['rows']:>9,} {r['seconds']:>10.2f} {rate:>12,.0f}  "
            f"{note}"
        )
    job = by["job"]
    lines.append("")
    lines.append(
        "ratios (same row count): executemany / write = "
        f"{many_rate * by['write']['rows'] / by['write']['seconds']:,.0f}x; "
        "executemany / whole job = "
        f"{many_rate * job['rows'] / job['seconds']:,.0f}x; "
        "per-row endpoint calls / job's batched scoring = "
        f"{by['per_row']['seconds'] / max(job['scoring_seconds'], 1e-9):,.0f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.writeback")
    parser.add_argument("--quick", action="store_true", help="3k customers, seconds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    # sqlglot (inside fakesnow) warns about every Snowflake property DuckDB lacks
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    if args.quick:
        customers, write_rows, slice_rows = 3_000, 2_000, 100
    else:
        # about 70% of the demo customers are active at the as-of date
        customers, write_rows, slice_rows = 286_000, TARGET_ROWS, 2_000
    results = run(customers, write_rows, slice_rows)
    print(_report(results))
    if args.json:
        args.json.write_text(
            json.dumps({"benchmark": "writeback", "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
