"""Fitting the calibration, and what it does to the demo data's scores."""

import logging

import numpy as np
import pytest

from features import load_feature_set
from inference.calibration import CalibrationError
from training.calibration import fit_platt


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_platt_recovers_the_map_that_generated_the_labels():
    rng = np.random.default_rng(3)
    scores = sigmoid(rng.normal(0, 2, size=50_000))  # an over-confident booster
    logit = np.log(scores / (1 - scores))
    labels = rng.random(len(scores)) < sigmoid(0.6 * logit - 1.5)
    fitted = fit_platt(scores.astype(np.float32), labels)
    assert fitted.method == "platt" and fitted.fitted_on == "validation"
    assert fitted.rows == 50_000 and fitted.positives == int(labels.sum())
    assert fitted.slope == pytest.approx(0.6, abs=0.03)
    assert fitted.intercept == pytest.approx(-1.5, abs=0.05)


def test_scores_of_exactly_zero_and_one_still_fit():
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 1.0] * 20)
    labels = np.array([0, 0, 1, 0, 1, 0, 1, 1] * 20)
    fitted = fit_platt(scores, labels)
    assert fitted.slope > 0
    assert list(fitted.apply(np.array([0.0, 1.0]))) == [0.0, 1.0]


def test_one_class_cannot_be_calibrated():
    with pytest.raises(CalibrationError, match="only one class"):
        fit_platt(np.array([0.1, 0.9]), np.array([0, 0]))


def test_scores_that_rank_backwards_keep_their_ranking_and_get_the_churn_rate(
    caplog,
):
    scores = np.linspace(0.05, 0.95, 200)
    labels = (scores < 0.3).astype(int)  # a model that ranks backwards
    with caplog.at_level(logging.WARNING, logger="training.calibration"):
        fitted = fit_platt(scores, labels)
    assert "not increasing" in caplog.text
    assert fitted.slope == 1.0
    assert fitted.apply(scores).mean() == pytest.approx(labels.mean(), abs=1e-9)
    assert np.all(np.diff(fitted.apply(scores)) > 0)


def test_scores_and_labels_must_pair_up():
    with pytest.raises(CalibrationError, match="3 scores for 2 labels"):
        fit_platt(np.array([0.1, 0.5, 0.9]), np.array([0, 1]))


DEMO_CUSTOMERS = 30_000


@pytest.fixture(scope="module")
def demo_splits(tmp_path_factory):
    """The demo data's features at the default as-of date, split as Extract splits."""
    from datagen.seed import ensure_demo_data
    from processing.extract import query_features
    from processing.stream import assign_split
    from stack.warehouse import EmbeddedWarehouse

    feature_set = load_feature_set("churn")
    warehouse = EmbeddedWarehouse(
        tmp_path_factory.mktemp("demo") / "snowflake", "MLOPS", "CHURN"
    )
    ensure_demo_data(warehouse, DEMO_CUSTOMERS, 7)
    with warehouse.connect() as conn:
        frame = query_features(
            conn, feature_set.sql, {"as_of": "2026-03-31", "label_window_days": 90}
        )
    frame = feature_set.schema.coerce(frame)
    split = assign_split(frame[feature_set.schema.entity_id], 0.15, 0.15)
    return {
        s: frame[split == s].reset_index(drop=True)
        for s in ("train", "validation", "test")
    }


def test_on_demo_data_score_is_a_probability_and_ranks_as_before(demo_splits, tmp_path):
    from inference.model import load_model
    from processing.evaluate import evaluate
    from training.hyperparameters import DEFAULTS
    from training.train import save_model, train_model

    schema = load_feature_set("churn").schema
    trained = train_model(
        demo_splits["train"], demo_splits["validation"], schema, DEFAULTS, threads=2
    )
    save_model(trained, tmp_path)
    report = evaluate(load_model(tmp_path), demo_splits["test"])
    before, after = report["calibration"]["before"], report["calibration"]["after"]
    positive_rate = report["evaluation"]["positive_rate"]
    # class weighting inflates the booster's scores; SCORE's mean is the churn rate
    assert before["expected_calibration_error"] > 0.15
    assert before["mean_score"] > 2 * positive_rate
    assert after["expected_calibration_error"] < 0.03
    assert after["mean_score"] == pytest.approx(positive_rate, abs=0.01)
    assert abs(after["auc"] - before["auc"]) <= 0.002
    assert report["binary_classification_metrics"]["auc"]["value"] == after["auc"]
