"""The registration gate: the absolute rule, and the champion rule both ways."""

import tarfile

import numpy as np
import pytest

from processing.evaluate import run_evaluation
from processing.gate import Champion, GateSettings, decide, run_gate
from stack.objectstore import LocalObjectStore
from stack.registry import LocalModelRegistry
from tests.processing.test_evaluate import SCHEMA, synthetic, write_split
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

GROUP = "churn-models"


def test_absolute_rule_rejects_below_the_threshold_even_without_a_champion():
    gate = decide(0.65, 0.70, 0.01, None)
    assert gate["decision"] == "reject" and gate["passed"] == 0
    assert gate["rule"].startswith("absolute rule: test AUC 0.6500 is below")


def test_first_model_is_judged_by_the_absolute_rule_only():
    gate = decide(0.75, 0.70, 0.01, None)
    assert (gate["decision"], gate["champion_auc"]) == ("register", None)
    assert "no Approved champion" in gate["rule"]


def test_champion_rule_uses_the_tolerance():
    champion = Champion("arn:x/3", 3, 0.80)
    within = decide(0.795, 0.70, 0.01, champion)
    worse = decide(0.78, 0.70, 0.01, champion)
    assert within["decision"] == "register" and "within the tolerance" in within["rule"]
    assert worse["decision"] == "reject"
    assert "worse than champion version 3's 0.8000" in worse["rule"]
    # the absolute rule still applies when the champion is worse still
    assert decide(0.60, 0.70, 0.5, Champion("a", 1, 0.55))["decision"] == "reject"


def test_an_unscorable_champion_is_named_in_the_rule():
    gate = decide(0.75, 0.70, 0.01, Champion("a", 2, None, "SchemaError: x"))
    assert gate["decision"] == "register"
    assert (
        "version 2 could not be scored" in gate["rule"]
        and "SchemaError" in gate["rule"]
    )


def _model_dir(tmp_path, name, noise_labels):
    train = synthetic(2000, 1)
    if noise_labels:  # a model trained on shuffled labels: AUC near 0.5
        train["y"] = np.random.default_rng(0).permutation(train["y"].to_numpy())
    trained = train_model(
        train, synthetic(500, 2), SCHEMA, {**DEFAULTS, "num_round": 30}, threads=1
    )
    folder = tmp_path / name
    save_model(trained, folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "strong": _model_dir(root, "strong", False),
        "weak": _model_dir(root, "weak", True),
    }


def _approve_champion(tmp_path, folder):
    store = LocalObjectStore(tmp_path / "s3")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    archive = tmp_path / "champion.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    uri = "s3://bucket/champion/model.tar.gz"
    store.upload_file(archive, uri)
    registry.register(
        {
            "ModelPackageGroupName": GROUP,
            "InferenceSpecification": {
                "Containers": [{"Image": "img:1", "ModelDataUrl": uri}]
            },
            "ModelApprovalStatus": "Approved",
        }
    )
    # a newer Rejected and a Pending version are never the champion
    for status in ("Rejected", "PendingManualApproval"):
        registry.register(
            {
                "ModelPackageGroupName": GROUP,
                "InferenceSpecification": {
                    "Containers": [{"Image": "img:1", "ModelDataUrl": "s3://bkt/x"}]
                },
                "ModelApprovalStatus": status,
            }
        )
    return GateSettings(0.4, 0.01, GROUP, registry, store)


def _evaluate(tmp_path, model_dir, gate):
    """Evaluate, then the Gate on Evaluate's output, as the pipeline runs them."""
    test_dir = write_split(tmp_path / "test", synthetic(800, 3))
    run_evaluation(model_dir, test_dir, tmp_path / "evaluation", 0.5)
    return run_gate(tmp_path / "evaluation", test_dir, tmp_path / "out", gate)


def test_a_challenger_worse_than_the_champion_is_rejected(models, tmp_path):
    gate = _approve_champion(tmp_path, models["strong"])
    report = _evaluate(tmp_path, models["weak"], gate)["gate"]
    assert report["champion_version"] == 1
    assert report["champion_auc"] > 0.85 > report["challenger_auc"] >= 0.4
    assert report["decision"] == "reject" and report["rule"].startswith("champion rule")
    assert "REJECT" in (tmp_path / "out" / "report.html").read_text()


def test_a_challenger_better_than_the_champion_is_registered(models, tmp_path):
    gate = _approve_champion(tmp_path, models["weak"])
    report = _evaluate(tmp_path, models["strong"], gate)["gate"]
    assert report["challenger_auc"] > report["champion_auc"]
    assert report["decision"] == "register" and report["passed"] == 1


def test_the_champion_is_scored_on_the_same_split_as_the_challenger(models, tmp_path):
    gate = _approve_champion(tmp_path, models["strong"])
    report = _evaluate(tmp_path, models["strong"], gate)
    # same model, same rows: identical AUC, so the comparison is like for like
    assert report["gate"]["champion_auc"] == pytest.approx(
        report["binary_classification_metrics"]["auc"]["value"]
    )


def test_with_no_champion_only_the_absolute_rule_applies(models, tmp_path):
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    store = LocalObjectStore(tmp_path / "s3")
    strict = GateSettings(0.99, 0.01, GROUP, registry, store)
    report = _evaluate(tmp_path, models["strong"], strict)["gate"]
    assert report["decision"] == "reject" and report["rule"].startswith("absolute rule")
    lenient = GateSettings(0.6, 0.01, GROUP, registry, store)
    assert _evaluate(tmp_path, models["strong"], lenient)["gate"]["decision"] == (
        "register"
    )
