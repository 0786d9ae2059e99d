import json
import os

import pytest
import sqlglot

from features import load_feature_set
from processing.extract_sql import source_tables
from processing.fingerprint import fingerprint_tables, table_fingerprint_sql
from processing.preflight import main
from tests.processing.test_extract import _entry_env

TABLES = ["customers", "transactions", "support_events"]


def fingerprint(warehouse):
    with warehouse.connect() as conn:
        return fingerprint_tables(conn, TABLES, None)


def test_the_feature_query_reads_three_tables_and_no_cte():
    assert source_tables(load_feature_set("churn").sql) == TABLES
    assert source_tables(
        "WITH recent AS (SELECT * FROM crm.orders o) SELECT * FROM recent r "
        "JOIN crm.orders p ON r.id = p.id"
    ) == ["crm.orders"]


def test_the_same_data_has_the_same_fingerprint_and_counts_every_row(warehouse):
    first, second = fingerprint(warehouse), fingerprint(warehouse)
    assert first == second
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM customers")
        customers = cursor.fetchone()[0]
    assert first["tables"]["customers"]["rows"] == customers
    assert len(first["fingerprint"]) == 64
    # what a client reading a signed BIGINT (the connector, Arrow) can hold
    for figures in first["tables"].values():
        assert -(2**63) <= int(figures["hash_xor"]) < 2**63


@pytest.mark.parametrize(
    "change",
    [
        # one value of one row
        "UPDATE transactions SET amount = amount + 0.01 WHERE txn_id = "
        "(SELECT MIN(txn_id) FROM transactions)",
        # a row duplicated (the XOR of its hash alone would cancel out)
        "INSERT INTO customers SELECT * FROM customers WHERE customer_id = "
        "(SELECT MIN(customer_id) FROM customers)",
        # a row gone
        "DELETE FROM support_events WHERE event_id = "
        "(SELECT MAX(event_id) FROM support_events)",
    ],
    ids=["value", "duplicate", "delete"],
)
def test_any_change_of_the_data_changes_the_fingerprint(warehouse, change):
    before = fingerprint(warehouse)
    with warehouse.connect() as conn:
        conn.cursor().execute(change)
    after = fingerprint(warehouse)
    assert after["fingerprint"] != before["fingerprint"]
    changed = [t for t in TABLES if after["tables"][t] != before["tables"][t]]
    assert len(changed) == 1


def test_on_snowflake_each_table_is_read_at_the_bound_data_version():
    sql = table_fingerprint_sql("crm.orders", ["ID", "Amount", 'odd"name'], True)
    assert "AT(TIMESTAMP => TO_TIMESTAMP_TZ(%(data_version)s))" in sql
    assert 'HASH("ID", "Amount", "odd""name")' in sql
    # the statement Snowflake runs parses as Snowflake SQL
    sqlglot.parse_one(sql.replace("%(data_version)s", "'2026-01-01'"), "snowflake")
    with pytest.raises(ValueError, match="no columns"):
        table_fingerprint_sql("crm.orders", [], False)


def run_preflight(monkeypatch, tmp_path, seeded, *args):
    for key in [k for k in os.environ if k.startswith("MLOPS_")]:
        monkeypatch.delenv(key)
    for key, value in _entry_env(tmp_path, seeded).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPT_ML_ROOT", str(tmp_path / "opt_ml"))
    code = main(list(args))
    message = tmp_path / "opt_ml" / "output" / "message"
    report = tmp_path / "opt_ml" / "processing" / "preflight" / "preflight.json"
    return (
        code,
        message.read_text() if message.exists() else None,
        json.loads(report.read_text()) if report.exists() else None,
    )


def test_preflight_writes_the_fingerprint_extract_is_keyed_on(
    monkeypatch, tmp_path, seeded_snowflake_dir
):
    code, message, report = run_preflight(
        monkeypatch,
        tmp_path,
        seeded_snowflake_dir,
        "--param",
        "AsOfDate=2026-03-31",
        "--param",
        "DataVersion=latest",
    )
    assert (code, message) == (0, None)
    assert set(report["data"]["tables"]) == set(TABLES)
    assert report["data"]["data_version"]["pinned"] is False  # no Time Travel here
    assert report["parameters"] == {"AsOfDate": "2026-03-31", "DataVersion": "latest"}


@pytest.mark.parametrize(
    "parameter",
    ["LearningRate=-1", "MaxDepth=0", "AsOfDate=notadate", "ModelApprovalStatus=Yes"],
)
def test_preflight_fails_a_bad_parameter_by_its_name_before_reading_anything(
    monkeypatch, tmp_path, seeded_snowflake_dir, parameter
):
    code, message, report = run_preflight(
        monkeypatch, tmp_path, seeded_snowflake_dir, "--param", parameter
    )
    name = parameter.split("=")[0]
    assert code == 2 and report is None
    assert message.startswith(f"Preflight: parameter {name}=")
