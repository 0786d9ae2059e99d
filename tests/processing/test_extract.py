import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import load_feature_set
from processing.extract import main, query_features
from processing.stream import SPLITS, SplitWriters, assign_split, stream_features
from tests.conftest import PROJECT_ROOT

AS_OF = date(2026, 3, 31)
PARAMS = {"as_of": AS_OF.isoformat(), "label_window_days": 90}


def stream(conn, tmp_path, feature_set=None, params=PARAMS, **kwargs):
    """Stream the churn features into tmp_path; the rows written, read back."""
    feature_set = feature_set or load_feature_set("churn")
    writers = SplitWriters({s: tmp_path / s for s in SPLITS}, "part-t", 1000)
    result = stream_features(
        conn, feature_set.sql, params, feature_set.schema, writers, **kwargs
    )
    frame = pd.concat(
        [pd.read_parquet(tmp_path / s / "part-t.parquet") for s in SPLITS],
        ignore_index=True,
    )
    return result, frame.sort_values("customer_id", ignore_index=True)


def test_streamed_features_are_one_row_per_active_customer_with_a_signal(
    warehouse, tmp_path
):
    with warehouse.connect() as conn:
        result, frame = stream(conn, tmp_path, slice_rows=400)
        whole = query_features(conn, load_feature_set("churn").sql, PARAMS)
    assert result.slices == 4 and result.total == len(whole) == len(frame)
    assert frame["customer_id"].is_unique
    assert set(frame["customer_id"]) == set(whole["customer_id"])
    assert 0.03 < frame["churned"].mean() < 0.4
    churners, stayers = frame[frame.churned == 1], frame[frame.churned == 0]
    assert churners["spend_trend"].mean() < stayers["spend_trend"].mean()
    # every slice appended to one file per split, in row groups of at most 1,000
    train = pq.ParquetFile(tmp_path / "train" / "part-t.parquet")
    assert train.metadata.num_row_groups >= 4
    assert all(
        train.metadata.row_group(i).num_rows <= 1000
        for i in range(train.metadata.num_row_groups)
    )


def test_slicing_does_not_change_the_rows(warehouse, tmp_path):
    with warehouse.connect() as conn:
        _, one = stream(conn, tmp_path / "one", slice_rows=1_000_000)
        _, many = stream(conn, tmp_path / "many", slice_rows=250)
    pd.testing.assert_frame_equal(one, many)


def test_events_after_the_as_of_date_do_not_change_the_features(warehouse, tmp_path):
    """Transactions, tickets and customers dated on or after as_of change nothing."""
    feature_set = load_feature_set("churn")
    later = str(AS_OF)  # features use rows strictly before as_of
    with warehouse.connect() as conn:
        _, before = stream(conn, tmp_path / "before")
        cursor = conn.cursor()
        cursor.execute(
            "INSERT INTO TRANSACTIONS SELECT TXN_ID + 10000000, CUSTOMER_ID, "
            "%(later)s, 999.0, 1, 'online' FROM TRANSACTIONS",
            {"later": later},
        )
        cursor.execute(
            "INSERT INTO SUPPORT_EVENTS SELECT EVENT_ID + 10000000, CUSTOMER_ID, "
            "%(later)s, 'complaint', 5, FALSE FROM SUPPORT_EVENTS",
            {"later": later},
        )
        cursor.execute(
            "INSERT INTO CUSTOMERS SELECT CUSTOMER_ID + 10000000, %(later)s, PLAN, "
            "REGION, AGE, MONTHLY_FEE, ACQUISITION_CHANNEL, NULL FROM CUSTOMERS",
            {"later": later},
        )
        _, after = stream(conn, tmp_path / "after")
    columns = [feature_set.schema.entity_id, *feature_set.schema.feature_names]
    pd.testing.assert_frame_equal(before[columns], after[columns])


def test_every_table_the_features_read_is_cut_at_the_as_of_date():
    """By construction: each table is read in a SELECT whose WHERE cuts at as_of.

    Event tables must be read strictly before as_of; only the label may look after
    it (CUSTOMERS.cancel_date, in the label window).
    """
    import sqlglot
    from sqlglot import exp

    sql = load_feature_set("churn").sql.replace("%(as_of)s", "'2026-03-31'")
    tree = sqlglot.parse_one(sql.replace("%(label_window_days)s", "90"), "snowflake")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables = [t for t in tree.find_all(exp.Table) if t.name.lower() not in ctes]
    assert {t.name.lower() for t in tables} == {
        "customers",
        "transactions",
        "support_events",
    }
    for table in tables:
        where = table.find_ancestor(exp.Select).args.get("where")
        assert where is not None, table.name
        cuts = [lt for lt in where.find_all(exp.LT) if lt.expression.sql() == "p.as_of"]
        assert cuts, f"{table.name} is read without a '< as_of' cut"


def test_split_is_deterministic_and_close_to_the_fractions():
    ids = pd.Series(np.arange(20_000))
    first = assign_split(ids, 0.15, 0.15)
    assert (
        first
        == assign_split(ids.sample(frac=1, random_state=1).sort_index(), 0.15, 0.15)
    ).all()
    shares = pd.Series(first).value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.02 and abs(shares["validation"] - 0.15) < 0.02
    with pytest.raises(ValueError):
        assign_split(ids, 0.6, 0.5)


def _write_resourceconfig(root: Path, host: str, hosts: list[str]) -> None:
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": hosts})
    )


def _entry_env(tmp_path: Path, seeded: Path, **extra: str) -> dict[str, str]:
    state = tmp_path / "state"
    if not (state / "snowflake").exists():
        shutil.copytree(seeded, state / "snowflake")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    return {
        **env,
        "MLOPS_STATE_DIR": str(state),
        "PYTHONPATH": str(PROJECT_ROOT),
        **extra,
    }


def test_two_workers_write_disjoint_shards_whose_union_is_the_source(
    tmp_path, seeded_snowflake_dir, warehouse
):
    """Two instances at once, as the local runner starts them for InstanceCount=2."""
    hosts = ["algo-1", "algo-2"]
    env = _entry_env(tmp_path, seeded_snowflake_dir, MLOPS_EXTRACT__SLICE_ROWS="300")
    processes = []
    for host in hosts:
        root = tmp_path / host
        _write_resourceconfig(root, host, hosts)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "processing.extract",
                    "--as-of",
                    "2026-03-31",
                    "--data-version",
                    "2026-04-01T00:00:00Z",
                ],
                env={**env, "OPT_ML_ROOT": str(root)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    ids = []
    for host in hosts:
        out = tmp_path / host / "processing" / "output"
        ids.append(
            pd.concat(
                [pd.read_parquet(out / s / f"part-{host}.parquet") for s in SPLITS]
            )["customer_id"]
        )
        manifest = json.loads((out / "train" / f"manifest-{host}.json").read_text())
        assert manifest["shards"] == 2 and manifest["rows_total"] == len(ids[-1])
        assert manifest["slices"] >= 2
    with warehouse.connect() as conn:
        source = query_features(conn, load_feature_set("churn").sql, PARAMS)
    assert len(ids[0]) and len(ids[1])
    assert not set(ids[0]) & set(ids[1])
    assert len(ids[0]) + len(ids[1]) == len(source)
    assert set(ids[0]) | set(ids[1]) == set(source["customer_id"])
    assert "slice 1/" in outputs[0]  # progress in the step's log


def run_main(monkeypatch, tmp_path, seeded, *args, **env):
    """Run the entry point in this process under the container contract."""
    for key in [k for k in os.environ if k.startswith("MLOPS_")]:
        monkeypatch.delenv(key)
    for key, value in _entry_env(tmp_path, seeded, **env).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPT_ML_ROOT", str(tmp_path / "opt_ml"))
    code = main(["--as-of", "2026-03-31", *args])
    message = tmp_path / "opt_ml" / "output" / "message"
    return code, message.read_text() if message.exists() else None


def test_the_entry_point_writes_parquet_and_a_manifest(
    monkeypatch, tmp_path, seeded_snowflake_dir
):
    code, message = run_main(
        monkeypatch,
        tmp_path,
        seeded_snowflake_dir,
        "--data-version",
        "2026-04-01T06:00:00+00:00",
    )
    assert (code, message) == (0, None)
    out = tmp_path / "opt_ml" / "processing" / "output"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*"))
    assert written == [
        f"{s}/{name}"
        for s in ("test", "train", "validation")
        for name in ("manifest-algo-1.json", "part-algo-1.parquet")
    ]
    manifest = json.loads((out / "test" / "manifest-algo-1.json").read_text())
    rows = {
        s: pq.ParquetFile(out / s / "part-algo-1.parquet").metadata.num_rows
        for s in SPLITS
    }
    assert manifest["rows"] == rows and manifest["rows_total"] == sum(rows.values())
    # the embedded warehouse has no Time Travel, and the manifest says so
    assert manifest["data_version"] == {
        "timestamp": "2026-04-01T06:00:00+00:00",
        "pinned": False,
        "note": "this warehouse has no Time Travel: the tables were read as they were",
    }
    assert len(manifest["query_sha256"]) == 64
    assert manifest["parameters"]["as_of"] == "2026-03-31"


# A team's own feature set: SQL over its own table and a schema, no code.
TEAM_SQL = """
SELECT customer_id,
       DATEDIFF(day, signup_date, TO_DATE(%(as_of)s)) AS tenure_days,
       {age} AS age,
       {fee} AS monthly_fee,
       IFF(cancel_date IS NOT NULL
           AND cancel_date < DATEADD(day, %(label_window_days)s, TO_DATE(%(as_of)s)),
           1, 0) AS churned
FROM customers
WHERE signup_date < TO_DATE(%(as_of)s)
  AND (cancel_date IS NULL OR cancel_date >= TO_DATE(%(as_of)s))
"""
TEAM_SCHEMA = """
entity_id: customer_id
label: churned
features:
  - {name: tenure_days, dtype: int, nullable: false}
  - {name: age, dtype: int, nullable: true}
  - {name: monthly_fee, dtype: float, nullable: false}
"""


def team_feature_set(tmp_path: Path, age: str = "age", fee: str = "monthly_fee"):
    folder = tmp_path / "team_features" / "retention"
    folder.mkdir(parents=True)
    sql = TEAM_SQL.format(age=age, fee=fee)
    if age == "MISSING":
        sql = sql.replace("MISSING AS age,", "")
    (folder / "features.sql").write_text(sql)
    (folder / "schema.yaml").write_text(TEAM_SCHEMA)
    return {"MLOPS_FEATURES__DIRECTORY": str(tmp_path / "team_features")}


def test_a_team_extracts_its_own_sql_and_schema_without_code(
    monkeypatch, tmp_path, seeded_snowflake_dir
):
    env = team_feature_set(tmp_path)
    code, message = run_main(
        monkeypatch,
        tmp_path,
        seeded_snowflake_dir,
        "--feature-set",
        "retention",
        **env,
    )
    assert (code, message) == (0, None)
    train = pd.read_parquet(
        tmp_path / "opt_ml/processing/output/train/part-algo-1.parquet"
    )
    assert list(train.columns) == [
        "customer_id",
        "tenure_days",
        "age",
        "monthly_fee",
        "churned",
    ]
    # NUMBER(8,2) arrives as a decimal and is written as a double
    assert train["monthly_fee"].dtype == np.float64


@pytest.mark.parametrize(
    ("case", "change", "reason"),
    [
        ("empty result", {"as_of": "2000-01-01"}, "the feature query returned no rows"),
        ("missing column", {"age": "MISSING"}, "missing column(s): age"),
        ("wrong type", {"fee": "plan"}, "feature monthly_fee has type string"),
        (
            "all-null feature",
            {"age": "CAST(NULL AS INT)"},
            "feature age is null in every row",
        ),
    ],
)
def test_bad_data_fails_the_step_with_its_reason(
    monkeypatch, tmp_path, seeded_snowflake_dir, case, change, reason
):
    as_of = change.pop("as_of", "2026-03-31")
    env = team_feature_set(tmp_path, **change)
    code, message = run_main(
        monkeypatch,
        tmp_path,
        seeded_snowflake_dir,
        "--feature-set",
        "retention",
        "--as-of",
        as_of,
        **env,
    )
    assert code == 1, case
    assert message.startswith("Extract: the feature data failed the schema check: ")
    assert reason in message, message
    # nothing half-written is left for the upload
    assert not list((tmp_path / "opt_ml").rglob("*.parquet"))


def test_a_non_nullable_feature_with_nulls_fails(warehouse, tmp_path):
    from features import FeatureSchema, FeatureSet, SchemaError

    base = load_feature_set("churn")
    schema = FeatureSchema.from_dict(
        {
            **base.schema.to_dict(),
            "features": [{"name": "age", "dtype": "int", "nullable": False}],
        }
    )
    with warehouse.connect() as conn, pytest.raises(SchemaError, match="age has"):
        stream(conn, tmp_path, FeatureSet("churn", schema, base.sql))
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_data_version_is_an_instant_or_latest(warehouse):
    from processing.extract import parse_data_version, resolve_data_version

    assert parse_data_version("latest") is None
    assert parse_data_version("2026-04-01T06:00:00") == datetime(
        2026, 4, 1, 6, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="neither 'latest' nor an ISO 8601"):
        parse_data_version("yesterday")
    given = datetime(2026, 4, 1, 6, tzinfo=UTC)
    with warehouse.connect() as conn:
        pinned = resolve_data_version(given, time_travel=True, conn=conn)
        latest = resolve_data_version(None, time_travel=True, conn=conn)
        unpinned = resolve_data_version(given, time_travel=False, conn=conn)
    assert pinned.pinned and pinned.timestamp == given
    # latest: Snowflake's clock, taken once
    assert latest.pinned and latest.timestamp.tzinfo is not None
    assert abs((latest.timestamp - datetime.now(UTC)).total_seconds()) < 3600
    assert not unpinned.pinned and "no Time Travel" in unpinned.note


def test_the_as_of_window_is_respected_by_the_label(warehouse, tmp_path):
    """The label looks only at cancellations inside the window after as_of."""
    with warehouse.connect() as conn:
        _, short = stream(
            conn, tmp_path / "a", params={**PARAMS, "label_window_days": 1}
        )
        _, long = stream(
            conn, tmp_path / "b", params={**PARAMS, "label_window_days": 90}
        )
    assert short["churned"].sum() < long["churned"].sum()
