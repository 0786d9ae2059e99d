import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features import SchemaError, load_feature_set
from tests.conftest import PROJECT_ROOT
from training.hyperparameters import (
    DEFAULTS,
    HyperparameterError,
    parse_hyperparameters,
)
from training.train import save_model, train_model

SCHEMA = load_feature_set("churn").schema


def churn_like(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.normal(size=n) for f in SCHEMA.feature_names})
    frame[SCHEMA.entity_id] = np.arange(n)
    risk = frame["complaints_90d"] - frame["spend_trend"] + 0.5 * rng.normal(size=n)
    frame[SCHEMA.label] = (risk > 1.5).astype(int)
    return frame


def test_hyperparameters_are_typed_and_checked():
    parsed = parse_hyperparameters({"max_depth": "3", "eta": "0.3"})
    assert parsed["max_depth"] == 3 and parsed["eta"] == 0.3
    assert parsed["num_round"] == DEFAULTS["num_round"]
    with pytest.raises(HyperparameterError, match="unknown hyperparameter"):
        parse_hyperparameters({"max_dept": "3"})
    with pytest.raises(HyperparameterError, match="not a valid int"):
        parse_hyperparameters({"max_depth": "deep"})
    with pytest.raises(HyperparameterError, match="eta"):
        parse_hyperparameters({"eta": "0"})


def test_training_is_reproducible_and_saves_what_serving_needs(tmp_path):
    hp = {**DEFAULTS, "num_round": 40}
    first = train_model(churn_like(1500, 1), churn_like(400, 2), SCHEMA, hp, threads=1)
    second = train_model(churn_like(1500, 1), churn_like(400, 2), SCHEMA, hp, threads=1)
    assert first.history == second.history
    assert first.metadata["best_validation_auc"] > 0.8
    save_model(first, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "model.json",
        "calibration.json",
        "schema.json",
        "metadata.json",
    }
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert calibration["method"] == "platt" and calibration["fitted_on"] == "validation"
    assert calibration["rows"] == 400 and first.calibration == second.calibration
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["score"].startswith("calibrated churn probability")
    assert "validation split (400 rows" in metadata["score"]
    assert set(metadata["feature_statistics"]) == set(SCHEMA.feature_names)
    assert metadata["versions"]["xgboost"]


def test_one_class_training_data_is_refused():
    data = churn_like(200, 3)
    data[SCHEMA.label] = 0
    with pytest.raises(SchemaError, match="only one class"):
        train_model(data, churn_like(100, 4), SCHEMA, DEFAULTS)


def test_the_entry_point_reports_a_missing_channel_as_the_failure(tmp_path):
    root = tmp_path / "opt_ml"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"max_depth": "3"}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}}))
    env = {**os.environ, "OPT_ML_ROOT": str(root), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "training.train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "validation channel is missing" in (root / "output" / "failure").read_text()


def test_the_model_does_not_depend_on_row_order():
    hp = {**DEFAULTS, "num_round": 30}
    train, validation = churn_like(1200, 5), churn_like(300, 6)
    shuffled = train.sample(frac=1.0, random_state=3)
    first = train_model(train, validation, SCHEMA, hp, threads=1)
    second = train_model(shuffled, validation, SCHEMA, hp, threads=1)
    assert first.history == second.history


def test_an_interrupted_spot_job_resumes_from_its_checkpoint(tmp_path):
    from tests.processing.test_evaluate import SCHEMA, synthetic
    from training.checkpoints import fingerprint, latest
    from training.hyperparameters import DEFAULTS
    from training.train import train_model

    hp = {**DEFAULTS, "num_round": 30, "early_stopping_rounds": 100}
    train, valid = synthetic(1000, 1), synthetic(300, 2)
    folder = tmp_path / "ckpt"
    full = train_model(train, valid, SCHEMA, hp, 1, checkpoint_dir=folder)
    assert full.metadata["resumed_from_round"] == 0
    # xgboost names a checkpoint by its last 0-based round
    assert sorted(p.name for p in folder.glob("*.ubj")) == [
        "model_10.ubj",
        "model_20.ubj",
    ]
    # the spot instance was reclaimed after round 11: only that checkpoint survives
    (folder / "model_20.ubj").unlink()
    assert latest(folder)[1] == 11
    resumed = train_model(train, valid, SCHEMA, hp, 1, checkpoint_dir=folder)
    assert resumed.metadata["resumed_from_round"] == 11
    assert resumed.booster.num_boosted_rounds() == 30
    assert len(resumed.history["validation"]["auc"]) == 19
    # a different setting gets its own folder: never resumes another model's trees
    (tmp_path / "a").mkdir()
    assert fingerprint(hp, [tmp_path / "a"]) != fingerprint(
        {**hp, "eta": 0.2}, [tmp_path / "a"]
    )
