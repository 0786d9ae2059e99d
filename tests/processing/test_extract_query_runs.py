"""The warehouse runs the feature query once per Extract instance, whatever the slices.

A wrapper around the connection (the driver boundary) records every statement; a
statement that embeds the feature query's text is one run of it on the warehouse.
"""

import contextlib
import json
import threading
import warnings
from collections.abc import Iterator

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import load_feature_set
from processing.extract import query_features
from processing.extract_sql import shard_table_statement
from processing.stream import SPLITS, SplitWriters, materialized_shard, stream_features
from tests.processing.test_extract import (
    PARAMS,
    _write_resourceconfig,
    run_main,
)

FEATURES = load_feature_set("churn")
BODY = FEATURES.sql.strip().rstrip(";").strip()


class RecordingConnection:
    """The connection, recording each statement and the rows each fetch returned."""

    def __init__(self, conn):
        self.conn = conn
        self.statements: list[str] = []
        self.fetched: list[int] = []

    def cursor(self):
        return _RecordingCursor(self, self.conn.cursor())

    def feature_query_runs(self) -> list[str]:
        return [s for s in self.statements if BODY in s]

    def __getattr__(self, name):
        return getattr(self.conn, name)


class _RecordingCursor:
    def __init__(self, owner, cursor):
        self.owner, self.cursor = owner, cursor
        # the connector's cursor has fetch_arrow_batches, fakesnow's in-process one not
        if hasattr(cursor, "fetch_arrow_batches"):
            self.fetch_arrow_batches = self._fetch_arrow_batches

    def execute(self, sql, *args, **kwargs):
        self.owner.statements.append(sql)
        return self.cursor.execute(sql, *args, **kwargs)

    def fetch_pandas_all(self):
        frame = self.cursor.fetch_pandas_all()
        self.owner.fetched.append(len(frame))
        return frame

    def _fetch_arrow_batches(self) -> Iterator:
        for batch in self.cursor.fetch_arrow_batches():
            self.owner.fetched.append(batch.num_rows)
            yield batch

    def __getattr__(self, name):
        if name == "fetch_arrow_batches":
            raise AttributeError(name)
        return getattr(self.cursor, name)


def _stream(conn, out, **kwargs):
    writers = SplitWriters({s: out / s for s in SPLITS}, "part-t", 1000)
    return stream_features(
        conn, FEATURES.sql, PARAMS, FEATURES.schema, writers, **kwargs
    )


def _ids(out) -> set:
    return set(
        pd.concat([pd.read_parquet(out / s / "part-t.parquet") for s in SPLITS])[
            "customer_id"
        ]
    )


@pytest.mark.parametrize("shards", [1, 2])
def test_each_instance_runs_the_feature_query_once_however_many_slices(
    warehouse, tmp_path, shards
):
    with warehouse.connect() as conn:
        source = set(query_features(conn, FEATURES.sql, PARAMS)["customer_id"])
        written: set = set()
        for shard in range(shards):
            recorded = RecordingConnection(conn)
            result = _stream(
                recorded,
                tmp_path / str(shard),
                shard=shard,
                shards=shards,
                slice_rows=250,
            )
            assert result.slices >= 4
            (run,) = recorded.feature_query_runs()  # one, for all the slices
            assert run.startswith("CREATE TEMPORARY TABLE EXTRACT_SHARD_")
            table = run.split()[3]
            slices = [s for s in recorded.statements if s.startswith("SELECT * FROM")]
            assert len(slices) == result.slices + 1  # + the columns (LIMIT 0)
            assert all(s.startswith(f"SELECT * FROM {table}") for s in slices)
            assert recorded.statements[-1] == f"DROP TABLE IF EXISTS {table}"
            # memory stays bounded: no fetch returned much more than a slice
            assert max(recorded.fetched) < 2 * 250
            ids = _ids(tmp_path / str(shard))
            assert not ids & written
            written |= ids
    assert written == source


def test_the_shard_table_is_gone_after_the_extract_and_after_a_failure(
    warehouse, tmp_path
):
    from features import FeatureSchema, SchemaError

    strict = FeatureSchema.from_dict(
        {
            **FEATURES.schema.to_dict(),
            "features": [{"name": "age", "dtype": "int", "nullable": False}],
        }
    )
    with warehouse.connect() as conn:
        recorded = RecordingConnection(conn)
        _stream(recorded, tmp_path / "ok", slice_rows=1000)
        with pytest.raises(SchemaError):
            writers = SplitWriters({s: tmp_path / "bad" / s for s in SPLITS}, "p", 10)
            stream_features(
                recorded,
                FEATURES.sql,
                PARAMS,
                strict,
                writers,
            )
        tables = [s.split()[3] for s in recorded.feature_query_runs()]
        assert len(tables) == 2
        for table in tables:
            with pytest.raises(Exception, match="does not exist"):
                conn.cursor().execute(f"SELECT COUNT(*) FROM {table}")


def test_a_role_without_create_table_is_told_what_to_grant():
    class NoPrivilege:
        def cursor(self):
            return self

        def execute(self, sql, params=None):
            raise RuntimeError(
                "SQL access control error: Insufficient privileges to operate on "
                "schema 'CHURN'"
            )

    with (
        pytest.raises(PermissionError, match="CREATE TABLE on the connection's"),
        materialized_shard(NoPrivilege(), "SELECT 1 AS id", {}, "id", 0, 1),
    ):
        pass


@pytest.mark.parametrize("hosts", [["algo-1"], ["algo-1", "algo-2"]])
def test_the_entry_point_runs_the_query_once_per_instance(
    monkeypatch, tmp_path, seeded_snowflake_dir, hosts
):
    """Under the container contract, one instance per host, as the local runner."""
    from stack.warehouse import EmbeddedWarehouse

    connect = EmbeddedWarehouse.connect
    recorded: list[RecordingConnection] = []

    @contextlib.contextmanager
    def recording_connect(self):
        with connect(self) as conn:
            recorded.append(RecordingConnection(conn))
            yield recorded[-1]

    monkeypatch.setattr(EmbeddedWarehouse, "connect", recording_connect)
    manifests = []
    for host in hosts:
        root = tmp_path / host
        _write_resourceconfig(root / "opt_ml", host, hosts)
        code, message = run_main(
            monkeypatch,
            root,
            seeded_snowflake_dir,
            "--data-version",
            "2026-04-01T00:00:00Z",
            MLOPS_EXTRACT__SLICE_ROWS="300",
        )
        assert (code, message) == (0, None)
        out = root / "opt_ml" / "processing" / "output"
        manifests.append(
            json.loads((out / "train" / f"manifest-{host}.json").read_text())
        )
        rows = {
            s: pq.ParquetFile(out / s / f"part-{host}.parquet").metadata.num_rows
            for s in SPLITS
        }
        assert manifests[-1]["rows"] == rows
    assert [len(c.feature_query_runs()) for c in recorded] == [1] * len(hosts)
    assert [m["shards"] for m in manifests] == [len(hosts)] * len(hosts)
    assert all(m["slices"] >= 2 for m in manifests)
    assert sum(m["rows_total"] for m in manifests) > 0


def test_two_sessions_on_a_fakesnow_server_each_run_the_query_once(
    fakesnow_server, tmp_path
):
    """On the server each session has its own temporary tables, as on Snowflake."""
    from tests.conftest import connect_to_fakesnow_server

    def connect():
        return connect_to_fakesnow_server(fakesnow_server)

    results: dict[int, object] = {}
    runs: dict[int, list[str]] = {}

    def worker(shard: int) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conn = connect()
                try:
                    recorded = RecordingConnection(conn)
                    results[shard] = _stream(
                        recorded,
                        tmp_path / str(shard),
                        shard=shard,
                        shards=2,
                        slice_rows=300,
                    )
                    runs[shard] = recorded.feature_query_runs()
                finally:
                    conn.close()
        except Exception as exc:  # reported by the assertion below
            results[shard] = exc

    threads = [threading.Thread(target=worker, args=(s,)) for s in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not [r for r in results.values() if isinstance(r, Exception)], results
    assert {s: len(r) for s, r in runs.items()} == {0: 1, 1: 1}
    first, second = _ids(tmp_path / "0"), _ids(tmp_path / "1")
    assert first and second and not first & second


def test_the_shard_table_statement_is_the_only_one_with_the_query():
    """The statement's text embeds the feature query, as the count above assumes."""
    assert BODY in shard_table_statement(FEATURES.sql, "customer_id", 0, 2, "T")
