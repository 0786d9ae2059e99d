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
