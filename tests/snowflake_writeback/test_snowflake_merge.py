"""The write-back's Snowflake branch executed: its MERGE, in its transaction, with the
counts Snowflake returns, and the refusal of repeated source keys on both branches.

fakesnow 0.12 cannot run a MERGE inside BEGIN ... COMMIT, so ``SnowflakeMerge``
sends the MERGE statement itself, unchanged, to the DuckDB connection behind the
embedded Snowflake: DuckDB (>= 1.4) has MERGE INTO of its own, with Snowflake's
grammar for these clauses. Snowflake answers a MERGE with one row (rows inserted,
rows updated); DuckDB answers one total, so ``RETURNING merge_action`` is appended
and the actions are counted into Snowflake's row: that adapter is the only thing
between the shipped statement and its execution. Everything else (the staging
table, write_pandas, BEGIN/COMMIT, the DELETE of gone entities) goes through
fakesnow as on the emulated branch.
"""

import contextlib
import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.writeback import (
    WritebackError,
    merge_statements,
    write_back,
)
from stack.warehouse import EmbeddedWarehouse
from tests.snowflake_writeback.test_writeback import AS_OF, fake_scorer, snapshot


class SnowflakeMerge:
    """The embedded Snowflake, taken for real Snowflake (``emulated`` false), so the
    write-back ships its Snowflake branch; MERGE statements run on DuckDB itself.
    """

    emulated = False
    bulk_load = True
    time_travel = False

    def __init__(self, embedded: EmbeddedWarehouse):
        self.embedded = embedded
        self.merges: list[str] = []

    @contextlib.contextmanager
    def connect(self):
        with self.embedded.connect() as conn:
            yield _Conn(conn, self.merges)

    def write_pandas(self, conn, frame, table, **kwargs):
        return self.embedded.write_pandas(conn._conn, frame, table, **kwargs)


class _Conn:
    def __init__(self, conn, merges):
        self._conn, self._merges = conn, merges

    def cursor(self):
        return _Cursor(self._conn.cursor(), self._merges)


class _Cursor:
    def __init__(self, cursor, merges):
        self._cursor, self._merges, self._row = cursor, merges, None

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def execute(self, sql, params=None):
        self._row = None
        if not sql.startswith("MERGE"):
            return self._cursor.execute(sql, params)
        self._merges.append(sql)
        # the DuckDB connection fakesnow's cursor runs on (fakesnow 0.12)
        actions = Counter(
            action
            for (action,) in self._cursor._duck_conn.execute(
                f"{sql} RETURNING merge_action"
            ).fetchall()
        )
        self._row = (actions["INSERT"], actions["UPDATE"])  # Snowflake's answer
        return self

    def fetchone(self):
        return self._row if self._row is not None else self._cursor.fetchone()


def write(warehouse, execution_id="exec-1", feature_set=None, model="arn:pkg/1"):
    return write_back(
        warehouse,
        feature_set or load_feature_set("churn"),
        fake_scorer([]),
        as_of=AS_OF,
        label_window_days=90,
        table="PREDICTIONS",
        model_package_arn=model,
        execution_id=execution_id,
    )


def counts(result):
    return (
        result.rows_inserted,
        result.rows_updated,
        result.rows_unchanged,
        result.rows_deleted,
    )


def change_customers(warehouse, statement):
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT CUSTOMER_ID FROM PREDICTIONS ORDER BY 1 LIMIT 5")
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(statement % ", ".join(str(i) for i in ids))


@pytest.fixture
def twin(seeded_snowflake_dir: Path, tmp_path: Path) -> EmbeddedWarehouse:
    root = tmp_path / "twin"
    shutil.copytree(seeded_snowflake_dir, root)
    return EmbeddedWarehouse(root, "MLOPS", "CHURN")


def without_scored_at(rows):
    return [row[:-1] for row in rows]  # SCORED_AT is the last column


def test_the_snowflake_merge_runs_and_its_counts_match_the_embedded_branch(
    warehouse, twin
):
    snowflake = SnowflakeMerge(warehouse)
    first = write(snowflake)
    assert snowflake.merges and snowflake.merges[0].startswith("MERGE INTO PREDICTIONS")
    assert counts(first) == (first.rows_scored, 0, 0, 0) and first.rows_scored > 1000
    assert counts(write(twin)) == counts(first)

    for target in (warehouse, twin):
        change_customers(
            target,
            "UPDATE CUSTOMERS SET MONTHLY_FEE = MONTHLY_FEE + 1 "
            "WHERE CUSTOMER_ID IN (%s)",
        )
    changed = write(snowflake, "exec-2")
    assert counts(changed) == (0, 5, first.rows_scored - 5, 0)
    assert counts(write(twin, "exec-2")) == counts(changed)

    rescored = write(snowflake, "exec-3", model="arn:pkg/2")
    assert counts(rescored) == (0, first.rows_scored, 0, 0)
    assert counts(write(twin, "exec-3", model="arn:pkg/2")) == counts(rescored)
    assert without_scored_at(snapshot(warehouse)) == without_scored_at(snapshot(twin))
    assert len(snowflake.merges) == 3


def _with_a_repeated_customer(feature_set):
    """The feature query returning its lowest customer twice, features changed in
    the second copy (as a join that fans out would).
    """
    body = feature_set.sql.strip().rstrip(";")
    sql = (
        f"WITH q AS (\n{body}\n)\n"
        "SELECT * FROM q UNION ALL\n"
        "SELECT * REPLACE (MONTHLY_FEE + 1 AS MONTHLY_FEE) FROM q\n"
        "WHERE CUSTOMER_ID = (SELECT MIN(CUSTOMER_ID) FROM q)"
    )
    return dataclasses.replace(feature_set, sql=sql)


@pytest.mark.parametrize("branch", ["snowflake", "embedded"])
def test_a_repeated_source_key_is_refused_on_both_branches(warehouse, branch):
    target = SnowflakeMerge(warehouse) if branch == "snowflake" else warehouse
    write(target)
    before = snapshot(warehouse)
    repeated = _with_a_repeated_customer(load_feature_set("churn"))
    with pytest.raises(WritebackError, match=r"Duplicate row detected.*Nothing was"):
        write(target, "exec-2", feature_set=repeated)
    assert snapshot(warehouse) == before
    if branch == "snowflake":
        assert len(target.merges) == 1  # refused before any MERGE


def test_the_snowflake_merge_itself_fails_on_a_repeated_key_as_snowflake_does():
    """Without the job's own check, the shipped statement would fail too: DuckDB's
    MERGE refuses two source rows for one target row, as Snowflake's does while
    ERROR_ON_NONDETERMINISTIC_MERGE is on (its default).
    """
    conn = duckdb.connect()
    columns = (
        "CUSTOMER_ID BIGINT, AS_OF_DATE DATE, SCORE DOUBLE, MODEL_PACKAGE_ARN VARCHAR, "
        "PIPELINE_EXECUTION_ID VARCHAR, FEATURES_HASH VARCHAR, SCORED_AT TIMESTAMP"
    )
    row = "(1, DATE '2026-06-30', %s, NULL, NULL, 'h', TIMESTAMP '2026-06-30 06:00')"
    conn.execute(f"CREATE TABLE PREDICTIONS ({columns})")
    conn.execute(f"CREATE TABLE S ({columns})")
    conn.execute(f"INSERT INTO PREDICTIONS VALUES {row % 0.1}")
    conn.execute(f"INSERT INTO S VALUES {row % 0.2}, {row % 0.3}")
    (merge,) = merge_statements("PREDICTIONS", "S", "CUSTOMER_ID", emulated=False)
    with pytest.raises(duckdb.Error, match="more than once"):
        conn.execute(merge)
