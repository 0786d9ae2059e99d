import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import numpy as np
import orjson
import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.writeback import (
    WritebackError,
    endpoint_scorer,
    merge_sql,
    merge_statements,
    write_back,
)
from stack.config import ConfigError
from tests.conftest import PROJECT_ROOT

AS_OF = date(2026, 6, 30)


class FakeRuntime:
    """A sagemaker-runtime client whose endpoint scores like a model would: from the
    features in the CSV body. ``answer`` replaces the scores; ``fail_at`` (a call
    number) raises instead.
    """

    def __init__(self, calls, answer=None, fail_at=None):
        self.calls, self.answer, self.fail_at = calls, answer, fail_at

    def invoke_endpoint(self, **request):
        body = request["Body"]
        self.calls.append(body)
        if len(self.calls) == self.fail_at:
            raise ConnectionError("endpoint went away")
        rows = body.decode().strip().splitlines()
        scores = (
            self.answer(len(rows))
            if self.answer
            else [1 / (1 + np.exp(-float(r.split(",")[0] or 0) / 1000)) for r in rows]
        )
        predictions = [float(v) for v in scores]
        return {"Body": io.BytesIO(orjson.dumps({"predictions": predictions}))}


def fake_scorer(calls, batch_rows=500, **kwargs):
    return endpoint_scorer(FakeRuntime(calls, **kwargs), "ep", batch_rows)


def run(warehouse, scorer, execution_id="exec-1", model_package_arn="arn:pkg/1"):
    return write_back(
        warehouse,
        load_feature_set("churn"),
        scorer,
        as_of=AS_OF,
        label_window_days=90,
        table="PREDICTIONS",
        model_package_arn=model_package_arn,
        execution_id=execution_id,
    )


def table_rows(warehouse):
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*), COUNT(DISTINCT CUSTOMER_ID), "
            "COUNT(DISTINCT PIPELINE_EXECUTION_ID) FROM PREDICTIONS"
        )
        return cursor.fetchone()


def snapshot(warehouse):
    """Every row of PREDICTIONS, in order (scores, ids, hashes and timestamps)."""
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT * FROM PREDICTIONS ORDER BY CUSTOMER_ID, AS_OF_DATE")
        return cursor.fetchall()


def test_a_rerun_finds_nothing_new_and_changes_nothing(warehouse):
    calls = []
    first = run(warehouse, fake_scorer(calls))
    assert first.rows_scored > 1000
    assert first.rows_inserted == first.rows_scored and first.rows_updated == 0
    assert first.batches == len(calls) == -(-first.rows_scored // 500)
    before = snapshot(warehouse)
    second_calls = []
    second = run(warehouse, fake_scorer(second_calls), execution_id="exec-2")
    assert (second.rows_scored, second.rows_inserted, second.rows_updated) == (0, 0, 0)
    assert second.rows_unchanged == first.rows_scored and second_calls == []
    assert snapshot(warehouse) == before  # same rows, same counts, same timestamps
    assert table_rows(warehouse) == (first.rows_scored, first.rows_scored, 1)


def test_only_changed_entities_are_rescored(warehouse):
    first = run(warehouse, fake_scorer([]))
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT CUSTOMER_ID FROM PREDICTIONS ORDER BY CUSTOMER_ID LIMIT 5"
        )
        changed = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "UPDATE CUSTOMERS SET MONTHLY_FEE = MONTHLY_FEE + 1 "
            "WHERE CUSTOMER_ID IN (%s, %s, %s, %s, %s)",
            changed,
        )
    second = run(warehouse, fake_scorer([]), execution_id="exec-2")
    assert (second.rows_scored, second.rows_inserted, second.rows_updated) == (5, 0, 5)
    assert table_rows(warehouse) == (first.rows_scored, first.rows_scored, 2)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT CUSTOMER_ID FROM PREDICTIONS WHERE PIPELINE_EXECUTION_ID = 'exec-2'"
            " ORDER BY CUSTOMER_ID"
        )
        assert [row[0] for row in cursor.fetchall()] == changed


def test_another_model_rescores_everything_in_place(warehouse):
    first = run(warehouse, fake_scorer([]))
    second = run(warehouse, fake_scorer([]), "exec-2", model_package_arn="arn:pkg/2")
    assert (second.rows_inserted, second.rows_updated) == (0, first.rows_scored)
    assert table_rows(warehouse) == (first.rows_scored, first.rows_scored, 1)


def test_an_endpoint_failure_mid_run_leaves_no_partial_rows(warehouse):
    run(warehouse, fake_scorer([]))
    before = snapshot(warehouse)
    calls = []
    failing = fake_scorer(calls, fail_at=3)
    with pytest.raises(WritebackError, match="endpoint went away"):
        run(warehouse, failing, "exec-broken", model_package_arn="arn:pkg/2")
    assert len(calls) == 3
    assert snapshot(warehouse) == before


# The job in a child process that dies (os._exit: no cleanup, no ROLLBACK) at a point
# of the merge: "staged" = scores staged, nothing merged; "mid-merge" = after the
# first statement of the transaction ran, before the rest and COMMIT.
KILLED_CHILD = """
import os, sys
from datetime import date
import numpy as np
from features import load_feature_set
from snowflake.sagemaker_predictions import writeback
from stack.warehouse import EmbeddedWarehouse

where = sys.argv[2]
original = writeback.merge_statements

def dying(*args, **kwargs):
    statements = original(*args, **kwargs)
    def run():
        if where == "mid-merge":
            yield statements[0]
        os._exit(9)
    return run()

writeback.merge_statements = dying
class Quarter:
    requests_sent = 0
    def predict(self, rows):
        return np.full(len(rows), 0.25)

score = Quarter()
writeback.write_back(
    EmbeddedWarehouse(__import__("pathlib").Path(sys.argv[1]), "MLOPS", "CHURN"),
    load_feature_set("churn"), score, as_of=date(2026, 6, 30), label_window_days=90,
    table="PREDICTIONS", model_package_arn="arn:pkg/2", execution_id="exec-killed",
)
"""


@pytest.mark.parametrize("where", ["staged", "mid-merge"])
def test_a_job_killed_during_the_merge_leaves_no_partial_rows(warehouse, where):
    first = run(warehouse, fake_scorer([]))
    before = snapshot(warehouse)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(warehouse.root), where],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 9, child.stderr
    assert snapshot(warehouse) == before  # nothing of the killed run is visible
    again = run(warehouse, fake_scorer([]), "exec-3", model_package_arn="arn:pkg/2")
    assert (again.rows_inserted, again.rows_updated) == (0, first.rows_scored)
    assert table_rows(warehouse) == (first.rows_scored, first.rows_scored, 1)


def test_identifiers_in_sql_are_validated():
    with pytest.raises(ConfigError):
        merge_sql("PREDICTIONS; DROP TABLE X", "S", "CUSTOMER_ID")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda n: np.full(n - 1, 0.5), "rows 0-499: the endpoint answered 499 scores"),
        (lambda n: np.full(n, 1.5), "outside \\[0, 1\\]"),
        (lambda n: np.full(n, np.nan), "outside \\[0, 1\\]"),
    ],
)
def test_a_wrong_answer_from_the_endpoint_writes_nothing(warehouse, answer, message):
    with pytest.raises(WritebackError, match=message):
        run(warehouse, fake_scorer([], answer=answer))
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM PREDICTIONS")
        assert cursor.fetchone()[0] == 0


def test_the_real_merge_is_one_statement_and_the_embedded_one_is_explicit():
    import sqlglot

    real = merge_statements("PREDICTIONS", "S", "CUSTOMER_ID", emulated=False)
    assert len(real) == 1
    assert isinstance(sqlglot.parse_one(real[0], read="snowflake"), sqlglot.exp.Merge)
    embedded = merge_statements("PREDICTIONS", "S", "CUSTOMER_ID", emulated=True)
    assert [s.split()[0] for s in embedded] == ["UPDATE", "INSERT"]


def test_the_writeback_command_names_a_missing_endpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snowflake.sagemaker_predictions", "writeback",
         "--env", "local", "--endpoint", "no-such-endpoint"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLOPS_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "writeback: endpoint no-such-endpoint does not exist" in result.stderr


def test_as_a_processing_job_it_waits_then_fails_with_a_reason(tmp_path):
    """The WriteBack step: a bounded wait for the endpoint, then the reason where
    SageMaker reads a failed job's message."""
    root = tmp_path / "opt-ml"
    result = subprocess.run(
        [sys.executable, "-m", "snowflake.sagemaker_predictions", "writeback",
         "--env", "local", "--endpoint", "no-such-endpoint",
         "--wait-for-endpoint", "1", "--output-dir", "/opt/ml/processing/writeback"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLOPS_STATE_DIR": str(tmp_path),
             "OPT_ML_ROOT": str(root)},
    )  # fmt: skip
    assert result.returncode == 1
    message = (root / "output" / "message").read_text()
    assert message.startswith("endpoint no-such-endpoint does not exist after 1 s")
    assert not (root / "processing" / "writeback" / "writeback.json").exists()


def test_the_staged_frame_has_no_python_objects_and_parquet_keeps_its_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from snowflake.sagemaker_predictions.writeback import _scored_frame

    result = pa.table(
        {"customer_id": pa.array([7, 9], pa.int64()), "features_hash": ["a", "b"]}
    )
    frame = _scored_frame(
        result, "CUSTOMER_ID", "customer_id", AS_OF, np.array([0.1, 0.9]),
        "arn:pkg/1", None,
    )  # fmt: skip
    # the embedded write_pandas visits each value of an object column in Python
    assert not [c for c in frame.columns if frame[c].dtype == object]
    frame.to_parquet(tmp_path / "staged.parquet", index=False)  # what Snowflake loads
    staged = pq.read_table(tmp_path / "staged.parquet")
    assert staged.schema.field("AS_OF_DATE").type == pa.date32()
    assert staged.schema.field("PIPELINE_EXECUTION_ID").type == pa.string()
    assert staged.to_pydict()["AS_OF_DATE"] == [AS_OF, AS_OF]
    assert staged.to_pydict()["MODEL_PACKAGE_ARN"] == ["arn:pkg/1"] * 2
    assert staged.to_pydict()["CUSTOMER_ID"] == [7, 9]


def test_results_come_as_arrow_without_pandas_and_decimals_become_floats(warehouse):
    import pyarrow as pa

    from snowflake.sagemaker_predictions.writeback import (
        _features_frame,
        _fetch_arrow,
    )

    schema = load_feature_set("churn").schema
    # NUMBER(p,s) arrives as Arrow decimals (so do DuckDB's SUMs and COUNT_IFs)
    columns = ", ".join(
        f"CAST(2.5 AS NUMBER(10, 2)) AS {f}" for f in schema.feature_names
    )
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT 7 AS customer_id, {columns}")

        def refused() -> None:
            raise AssertionError("fetched through pandas")

        # fakesnow's cursor holds an Arrow table: no Decimal object per value
        cursor.fetch_pandas_all = refused
        result = _fetch_arrow(cursor)
    assert isinstance(result, pa.Table) and result.num_rows == 1
    assert pa.types.is_decimal(result.column("TENURE_DAYS").type)
    frame = _features_frame(
        result.rename_columns([c.lower() for c in result.column_names]), schema
    )
    assert all(frame[f].dtype == "float64" for f in schema.feature_names)
    assert frame[schema.feature_names[0]].tolist() == [2.5]
    assert frame[schema.entity_id].tolist() == [7]


def test_a_cursor_without_arrow_results_is_read_through_pandas():
    import pandas as pd

    from snowflake.sagemaker_predictions.writeback import _fetch_arrow

    class PandasOnly:
        def fetch_pandas_all(self) -> pd.DataFrame:
            return pd.DataFrame({"A": [1, 2]})

    assert _fetch_arrow(PandasOnly()).to_pydict() == {"A": [1, 2]}


def test_rows_of_entities_the_data_no_longer_has_are_deleted_for_that_date_only(
    warehouse,
):
    first = run(warehouse, fake_scorer([]))
    older = date(2026, 3, 31)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        # an earlier date's scores are history: the write-back leaves them alone
        cursor.execute(
            "INSERT INTO PREDICTIONS SELECT CUSTOMER_ID, %s, SCORE, MODEL_PACKAGE_ARN, "
            "PIPELINE_EXECUTION_ID, FEATURES_HASH, SCORED_AT FROM PREDICTIONS",
            (older,),
        )
        cursor.execute("SELECT MIN(CUSTOMER_ID), MAX(CUSTOMER_ID) FROM PREDICTIONS")
        gone = list(cursor.fetchone())
        for customer in gone:
            for table in ("transactions", "support_events", "customers"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE customer_id = %s", (customer,)
                )
    calls = []
    second = run(warehouse, fake_scorer(calls), execution_id="exec-2")
    assert (second.rows_scored, second.rows_deleted, calls) == (0, 2, [])
    assert second.rows_unchanged == first.rows_scored - 2
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT AS_OF_DATE, COUNT(*) FROM PREDICTIONS WHERE CUSTOMER_ID IN (%s, %s) "
            "GROUP BY AS_OF_DATE",
            gone,
        )
        assert cursor.fetchall() == [(older, 2)]
    assert table_rows(warehouse)[0] == 2 * first.rows_scored - 2
    # and a rerun deletes nothing more
    assert run(warehouse, fake_scorer([]), execution_id="exec-3").rows_deleted == 0


def test_one_changed_customer_with_a_null_feature_is_scored(warehouse):
    """A nullable feature null in every row to score is fine when those rows are a
    few changed customers, not a data set."""
    from processing.extract import query_features

    run(warehouse, fake_scorer([]))
    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        features = query_features(
            conn, feature_set.sql, {"as_of": AS_OF.isoformat(), "label_window_days": 90}
        )
        nullable = [f.name for f in feature_set.schema.features if f.nullable]
        quiet = features[features[nullable].isna().any(axis=1)]
        assert len(quiet), "the demo data has customers with a null feature"
        customer = int(quiet["customer_id"].iloc[0])
        conn.cursor().execute(
            "UPDATE customers SET monthly_fee = monthly_fee + 1 WHERE customer_id = %s",
            (customer,),
        )
    calls = []
    result = run(warehouse, fake_scorer(calls), execution_id="exec-2")
    assert (result.rows_scored, result.rows_updated, len(calls)) == (1, 1, 1)


def test_scored_at_is_naive_utc_whatever_the_machines_time_zone(warehouse, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        run(warehouse, fake_scorer([]))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    now = datetime.now(UTC).replace(tzinfo=None)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT MIN(SCORED_AT), MAX(SCORED_AT) FROM PREDICTIONS")
        lowest, highest = cursor.fetchone()
    assert now - timedelta(minutes=2) < lowest <= highest <= now
