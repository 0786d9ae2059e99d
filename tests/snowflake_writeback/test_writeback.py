from datetime import date

import numpy as np
import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.writeback import (
    PAYLOAD_LIMIT_BYTES,
    WritebackError,
    csv_batches,
    merge_sql,
    write_back,
)
from stack.config import ConfigError

AS_OF = date(2026, 6, 30)


def fake_scorer(calls):
    """Scores like a model would: from the features in the CSV body."""

    def score(body: bytes) -> np.ndarray:
        calls.append(body)
        rows = body.decode().strip().splitlines()
        return np.array(
            [1 / (1 + np.exp(-float(r.split(",")[0] or 0) / 1000)) for r in rows]
        )

    return score


def run(warehouse, scorer, execution_id="exec-1", batch_rows=500):
    return write_back(
        warehouse,
        load_feature_set("churn"),
        scorer,
        as_of=AS_OF,
        label_window_days=90,
        table="PREDICTIONS",
        model_package_arn="arn:pkg/1",
        execution_id=execution_id,
        batch_rows=batch_rows,
    )


def table_rows(warehouse):
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*), COUNT(DISTINCT CUSTOMER_ID), "
            "COUNT(DISTINCT PIPELINE_EXECUTION_ID) FROM PREDICTIONS"
        )
        return cursor.fetchone()


def test_a_rerun_updates_instead_of_duplicating(warehouse):
    calls = []
    first = run(warehouse, fake_scorer(calls))
    assert first.rows_scored > 1000
    assert first.rows_inserted == first.rows_scored and first.rows_updated == 0
    assert first.batches == len(calls) == -(-first.rows_scored // 500)
    second = run(warehouse, fake_scorer([]), execution_id="exec-2")
    assert (second.rows_inserted, second.rows_updated) == (0, first.rows_scored)
    total, customers, executions = table_rows(warehouse)
    assert total == customers == first.rows_scored
    assert executions == 1  # every row now carries the second run's execution id


def test_an_interrupted_run_leaves_no_partial_rows(warehouse):
    run(warehouse, fake_scorer([]))
    before = table_rows(warehouse)
    calls = []

    def failing(body: bytes) -> np.ndarray:
        calls.append(body)
        if len(calls) == 3:
            raise ConnectionError("endpoint went away")
        return fake_scorer([])(body)

    with pytest.raises(ConnectionError):
        run(warehouse, failing, execution_id="exec-broken")
    assert table_rows(warehouse) == before
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM PREDICTIONS WHERE PIPELINE_EXECUTION_ID = %s",
            ("exec-broken",),
        )
        assert cursor.fetchone()[0] == 0


def test_batches_stay_under_the_payload_limit_and_cover_every_row():
    matrix = np.random.default_rng(0).normal(size=(120_000, 19)).astype(np.float32)
    starts, total = [], 0
    for start, rows, body in csv_batches(matrix, batch_rows=100_000):
        assert len(body) <= PAYLOAD_LIMIT_BYTES
        assert body.count(b"\n") == rows
        starts.append(start)
        total += rows
    assert total == len(matrix) and starts[0] == 0 and len(starts) > 2


def test_identifiers_in_sql_are_validated():
    with pytest.raises(ConfigError):
        merge_sql("PREDICTIONS; DROP TABLE X", "S", "CUSTOMER_ID")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda n: np.full(n - 1, 0.5), "answered 499 scores for the 500 rows"),
        (lambda n: np.full(n, 1.5), "outside \\[0, 1\\]"),
        (lambda n: np.full(n, np.nan), "outside \\[0, 1\\]"),
    ],
)
def test_a_wrong_answer_from_the_endpoint_writes_nothing(warehouse, answer, message):
    def score(body: bytes) -> np.ndarray:
        return answer(body.count(b"\n"))

    with pytest.raises(WritebackError, match=message):
        run(warehouse, score, batch_rows=500)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = 'PREDICTIONS'"
        )
        assert cursor.fetchone()[0] == 0
