import json

import numpy as np
import pandas as pd
import pytest

from features import FeatureSchema, SchemaError
from inference.model import load_model
from processing.evaluate import evaluate
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

SCHEMA = FeatureSchema.from_dict(
    {
        "entity_id": "id",
        "label": "y",
        "features": [{"name": "x1"}, {"name": "x2"}],
    }
)


def synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (x1 + 0.5 * rng.normal(size=n) > 0.8).astype(int)
    return pd.DataFrame({"id": np.arange(n), "x1": x1, "x2": x2, "y": y})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    trained = train_model(
        synthetic(2000, 1),
        synthetic(500, 2),
        SCHEMA,
        {**DEFAULTS, "num_round": 50},
        threads=1,
    )
    folder = tmp_path_factory.mktemp("model")
    save_model(trained, folder)
    return load_model(folder)


def test_metrics_follow_the_model_quality_layout(model):
    report = evaluate(model, synthetic(800, 3))
    metrics = report["binary_classification_metrics"]
    assert metrics["auc"]["value"] > 0.85
    for name in (
        "pr_auc",
        "log_loss",
        "brier_score",
        "precision",
        "recall",
        "f1",
        "accuracy",
    ):
        assert isinstance(metrics[name]["value"], float)
    matrix = metrics["confusion_matrix"]
    assert sum(matrix[a][b] for a in "01" for b in "01") == 800


def test_a_single_class_test_split_is_refused(model):
    data = synthetic(100, 4)
    data["y"] = 0
    with pytest.raises(SchemaError, match="one class"):
        evaluate(model, data)


def test_the_extract_manifests_are_summed_for_the_report(tmp_path):
    import json

    from processing.evaluate import extract_summary

    assert extract_summary(tmp_path) is None
    version = {"timestamp": "2026-04-01T00:00:00+00:00", "pinned": True, "note": ""}
    for host, rows in (("algo-1", 10), ("algo-2", 12)):
        (tmp_path / f"manifest-{host}.json").write_text(
            json.dumps(
                {
                    "feature_set": "churn",
                    "host": host,
                    "query_sha256": "ab" * 32,
                    "data_version": version,
                    "rows": {"train": rows, "validation": 2, "test": 3},
                }
            )
        )
    summary = extract_summary(tmp_path)
    assert summary["instances"] == 2
    assert summary["rows"] == {"train": 22, "validation": 4, "test": 6}
    assert summary["rows_total"] == 32
    assert summary["data_versions"] == {"algo-1": version, "algo-2": version}


def test_lift_and_calibration_are_computed_from_the_scores():
    from processing.evaluate import calibration_bins, top_decile_lift

    labels = np.array([0] * 90 + [1] * 10)
    perfect = np.linspace(0, 1, 100)  # the 10 positives hold the top 10 scores
    assert top_decile_lift(labels, perfect) == pytest.approx(10.0)
    assert top_decile_lift(labels, perfect[::-1]) == pytest.approx(0.0)
    calibrated = calibration_bins(labels, labels.astype(float))
    assert calibrated["expected_calibration_error"] == pytest.approx(0.0)
    scores = np.where(labels == 1, 0.6, 0.3)  # deciles 1-9 say 0.3, see 0.0
    off = calibration_bins(labels, scores)
    # 0.9 of the rows off by 0.3, 0.1 off by 0.4 (0.6 said, 1.0 seen)
    assert off["expected_calibration_error"] == pytest.approx(0.9 * 0.3 + 0.1 * 0.4)
    assert sum(b["count"] for b in off["bins"]) == 100


def write_split(directory, frame):
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / "part-algo-1.parquet")
    return directory


def test_the_report_is_one_self_contained_page_with_every_plot(model, tmp_path):
    from processing.evaluate import run_evaluation
    from processing.report import PLOTS

    model_dir = tmp_path / "model"
    save_model_dir(model, model_dir)
    test_dir = write_split(tmp_path / "test", synthetic(600, 5))
    report = run_evaluation(model_dir, test_dir, tmp_path / "out", 0.5)
    assert "gate" not in report
    for name in PLOTS:
        png = tmp_path / "out" / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert 'src="http' not in page and "<link" not in page
    assert f"{report['binary_classification_metrics']['auc']['value']:.4f}" in page
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["binary_classification_metrics"]["auc"]["value"] > 0.85
    assert saved["binary_classification_metrics"]["lift_top_decile"]["value"] > 1.5
    # SCORE's calibration, before and after, in the JSON and on the page
    calibration = saved["calibration"]
    assert calibration["fitted"]["method"] == "platt"
    assert calibration["score"].startswith("calibrated churn probability")
    for side in ("before", "after"):
        assert {"expected_calibration_error", "auc", "mean_score", "bins"} <= set(
            calibration[side]
        )
    assert saved["binary_classification_metrics"]["expected_calibration_error"][
        "value"
    ] == pytest.approx(calibration["after"]["expected_calibration_error"])
    assert "Booster, before calibration" in page and "Mean SCORE" in page
    assert f"{calibration['before']['expected_calibration_error']:.4f}" in page


def test_scores_are_calibrated_and_the_report_compares_them_with_the_booster(model):
    data = synthetic(800, 6)
    report = evaluate(model, data)
    before, after = report["calibration"]["before"], report["calibration"]["after"]
    matrix = model.schema.feature_matrix(data)
    raw = model.predict_raw(matrix)
    assert before["mean_score"] == pytest.approx(raw.mean())
    assert after["mean_score"] == pytest.approx(model.predict(matrix).mean())
    # class weighting inflated the booster's scores; calibration brings them down
    assert before["mean_score"] > after["mean_score"]
    assert after["expected_calibration_error"] < before["expected_calibration_error"]
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-12)


def test_a_model_without_calibration_is_evaluated_on_its_raw_scores(model, tmp_path):
    from processing.evaluate import run_evaluation

    model_dir = tmp_path / "model"
    save_model_dir(model, model_dir)
    (model_dir / "calibration.json").unlink()
    test_dir = write_split(tmp_path / "test", synthetic(600, 7))
    report = run_evaluation(model_dir, test_dir, tmp_path / "out", 0.5)
    calibration = report["calibration"]
    assert calibration["fitted"]["method"] == "identity"
    assert calibration["before"] == calibration["after"]
    assert "not a probability" in calibration["score"]


def save_model_dir(loaded, folder):
    """Write a LoadedModel back as a model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    loaded.booster.save_model(folder / "model.json")
    (folder / "calibration.json").write_text(json.dumps(loaded.calibration.to_dict()))
    (folder / "schema.json").write_text(json.dumps(loaded.schema.to_dict()))
    (folder / "metadata.json").write_text(json.dumps(loaded.metadata))
