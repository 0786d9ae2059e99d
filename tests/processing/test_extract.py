import os
import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from features import SchemaError, load_feature_set
from processing.extract import assign_split, extract, shard_query, write_splits
from tests.conftest import PROJECT_ROOT

AS_OF = date(2026, 3, 31)


def test_features_are_one_row_per_active_customer_with_a_real_signal(warehouse):
    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        frame = extract(conn, feature_set, AS_OF, 90)
    assert frame["customer_id"].is_unique
    assert 0.03 < frame["churned"].mean() < 0.4
    # the signal: churners spent less recently than the others
    churners = frame[frame.churned == 1]
    stayers = frame[frame.churned == 0]
    assert churners["spend_trend"].mean() < stayers["spend_trend"].mean()


def test_events_after_the_as_of_date_do_not_change_the_features(warehouse):
    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        before = extract(conn, feature_set, AS_OF, 90)
        cursor = conn.cursor()
        cursor.execute(
            "INSERT INTO TRANSACTIONS SELECT TXN_ID + 10000000, CUSTOMER_ID, "
            "%(later)s, 999.0, 1, 'pos' FROM TRANSACTIONS",
            {"later": str(AS_OF + timedelta(days=1))},
        )
        after = extract(conn, feature_set, AS_OF, 90)
    features = feature_set.schema.feature_names
    pd.testing.assert_frame_equal(before[features], after[features])


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


def test_two_shards_are_disjoint_and_cover_every_row(warehouse):
    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        whole = extract(conn, feature_set, AS_OF, 90)
        parts = [
            extract(conn, feature_set, AS_OF, 90, shard=i, shards=2) for i in (0, 1)
        ]
    ids = [set(p["customer_id"]) for p in parts]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(whole["customer_id"])
    with pytest.raises(ValueError):
        shard_query("select 1", "customer_id", 2, 2)


def test_an_empty_result_is_a_schema_error(warehouse):
    with warehouse.connect() as conn, pytest.raises(SchemaError, match="no rows"):
        extract(conn, load_feature_set("churn"), date(2000, 1, 1), 90)


def test_splits_are_written_as_parquet(tmp_path):
    schema = load_feature_set("churn").schema
    frame = pd.DataFrame({c: [1.0, 2.0, 3.0] for c in schema.feature_names})
    frame[schema.entity_id] = [1, 2, 3]
    frame[schema.label] = [0, 1, 0]
    splits = np.array(["train", "test", "validation"])
    dirs = {s: tmp_path / s for s in ("train", "validation", "test")}
    counts = write_splits(frame, schema, splits, dirs, "part-algo-1")
    assert counts == {"train": 1, "validation": 1, "test": 1}
    assert pd.read_parquet(dirs["test"] / "part-algo-1.parquet")[
        schema.entity_id
    ].tolist() == [2]


def test_the_entry_point_writes_the_failure_reason(tmp_path, seeded_snowflake_dir):
    """Under the container contract, a bad as-of date fails with /opt/ml/output/message."""
    import shutil

    state = tmp_path / "state"
    shutil.copytree(seeded_snowflake_dir, state / "snowflake")
    env = {
        **os.environ,
        "OPT_ML_ROOT": str(tmp_path / "opt_ml"),
        "MLOPS_STATE_DIR": str(state),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "processing.extract", "--as-of", "2000-01-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    message = (tmp_path / "opt_ml" / "output" / "message").read_text()
    assert "no rows" in message
    ok = subprocess.run(
        [sys.executable, "-m", "processing.extract", "--as-of", "2026-03-31"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    written = sorted(
        p.relative_to(tmp_path / "opt_ml").as_posix()
        for p in (tmp_path / "opt_ml").rglob("*.parquet")
    )
    assert written == [
        f"processing/output/{s}/part-algo-1.parquet"
        for s in ("test", "train", "validation")
    ]
