"""The write-back through the real Snowflake connector, against a fakesnow server.

fakesnow's server answers neither the PUT nor the COPY INTO that the connector's
``write_pandas`` sends, so ``ConnectorWarehouse`` stages there with bound
multi-row INSERTs (``bulk_load`` false); everything else is the job as it runs.
"""

import pandas as pd
import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.writeback import WritebackError
from stack.config import load_config
from stack.warehouse import ConnectorWarehouse, insert_rows
from tests.snowflake_writeback.test_snowflake_merge import (
    _with_a_repeated_customer,
    counts,
    write,
)
from tests.snowflake_writeback.test_writeback import snapshot


def connector(port):
    config = load_config(
        "test", {"snowflake.port": port, "snowflake.password": "fake"}, environ={}
    )
    return ConnectorWarehouse(config.snowflake)


def test_the_write_back_runs_through_the_connector_against_a_fakesnow_server(
    fakesnow_server,
):
    warehouse = connector(fakesnow_server)
    assert warehouse.emulated and not warehouse.bulk_load
    first = write(warehouse)
    assert first.rows_scored > 1000
    assert counts(first) == (first.rows_scored, 0, 0, 0)
    rows = snapshot(warehouse)
    assert len(rows) == first.rows_scored
    assert all(0 <= row[2] <= 1 for row in rows)  # SCORE
    again = write(warehouse, "exec-2")
    assert counts(again) == (0, 0, first.rows_scored, 0)
    assert snapshot(warehouse) == rows


def test_a_repeated_key_is_refused_through_the_connector_too(fakesnow_server):
    warehouse = connector(fakesnow_server)
    with pytest.raises(WritebackError, match="Duplicate row detected"):
        write(
            warehouse, feature_set=_with_a_repeated_customer(load_feature_set("churn"))
        )


class _RecordingConn:
    def __init__(self):
        self.statements = []

    def cursor(self):
        conn = self

        class Cursor:
            def execute(self, sql, params):
                conn.statements.append((sql, list(params)))

        return Cursor()


def test_rows_are_bound_in_chunks_as_plain_python_values():
    frame = pd.DataFrame(
        {
            "ID": [1, 2, 3],
            "AS_OF_DATE": pd.array(
                [pd.Timestamp("2026-06-30").date()] * 3, dtype="date32[pyarrow]"
            ),
            "SCORE": [0.5, None, 0.25],
            "ARN": pd.array(["a", None, "c"], dtype="string[pyarrow]"),
            "SCORED_AT": pd.Timestamp("2026-06-30 06:00"),
        }
    )
    conn = _RecordingConn()
    assert insert_rows(conn, frame, "T", chunk_rows=2) == 3
    (first_sql, first), (second_sql, second) = conn.statements
    assert first_sql.startswith("INSERT INTO T (ID, AS_OF_DATE, SCORE, ARN, SCORED_AT)")
    assert first_sql.count("(%s, %s, %s, %s, %s)") == 2
    assert second_sql.count("(%s, %s, %s, %s, %s)") == 1
    assert [type(v).__name__ for v in first[:5]] == [
        "int", "date", "float", "str", "datetime",
    ]  # fmt: skip
    assert first[5:8] == [2, first[1], None] and first[8] is None
    assert "%" not in str(second) and second[0] == 3
