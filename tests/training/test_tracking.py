"""One MLflow run per execution: training and evaluation land in it, with provenance."""

import json

import pytest

from processing.evaluate import run_evaluation
from processing.tracking import NO_RUN, log_gate_run, tag_registration
from tests.processing.test_evaluate import SCHEMA, synthetic, write_split
from training.hyperparameters import DEFAULTS
from training.tracking import log_training_run
from training.train import save_model, train_model


def test_the_gate_records_its_execution_in_a_child_of_the_training_run(
    tmp_path, monkeypatch
):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", (tmp_path / "art").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "churn-test")
    monkeypatch.setenv("TRAINING_JOB_NAME", "pipelines-abc123def-train-x")
    monkeypatch.setenv("MLOPS_SNOWFLAKE__PASSWORD", "pw-sentinel-77")
    trained = train_model(
        synthetic(1500, 1), synthetic(400, 2), SCHEMA, {**DEFAULTS, "num_round": 20}, 1
    )
    window = {"as_of_date": "2026-03-31", "label_window_days": "90"}
    run_id = log_training_run(trained, {"git_commit": "c0ffee", **window})
    assert run_id
    trained.metadata.update(mlflow_run_id=run_id, git_commit="c0ffee")
    save_model(trained, tmp_path / "model")
    test_dir = write_split(tmp_path / "test", synthetic(500, 3))
    report = run_evaluation(tmp_path / "model", test_dir, tmp_path / "out", 0.5)
    assert report["model"] == {
        "mlflow_run_id": run_id,
        "git_commit": "c0ffee",
        "best_iteration": trained.best_iteration,
    }
    training_before = mlflow.get_run(run_id).data
    report["gate"] = {"decision": "register", "rule": "the absolute rule"}
    gate_run_id = log_gate_run(report, tmp_path / "out", "abc123def")
    # a later execution that reuses the cached Train records a run of its own
    later_run_id = log_gate_run(report, tmp_path / "out", "later456")
    assert NO_RUN != gate_run_id != later_run_id != NO_RUN
    assert tag_registration(gate_run_id, "arn:aws:sagemaker:r:0:model-package/g/1")

    run = mlflow.get_run(run_id)
    assert run.data.tags["pipeline_execution_id"] == "abc123def"
    assert run.data.tags["git_commit"] == "c0ffee"
    assert run.data.tags["as_of_date"] == "2026-03-31"
    # the training run is never written after Train
    assert run.data.tags == training_before.tags
    assert run.data.metrics == training_before.metrics
    assert "pw-sentinel-77" not in json.dumps(run.data.params)
    gate, later = mlflow.get_run(gate_run_id), mlflow.get_run(later_run_id)
    assert gate.data.metrics["test_auc"] == pytest.approx(
        report["binary_classification_metrics"]["auc"]["value"]
    )
    assert gate.data.tags["mlflow.parentRunId"] == run_id
    assert gate.data.tags["gate_decision"] == "register"
    assert gate.data.tags["train_reused"] == "false"
    assert gate.data.tags["model_package_arn"].endswith("model-package/g/1")
    assert later.data.tags["pipeline_execution_id"] == "later456"
    assert later.data.tags["train_reused"] == "true"
    assert "model_package_arn" not in later.data.tags
    assert later.info.experiment_id == run.info.experiment_id
    client = mlflow.MlflowClient()
    files = {a.path for a in client.list_artifacts(gate_run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/evaluation.json"} <= files
    history = client.get_metric_history(run_id, "validation_auc")
    assert [m.step for m in history] == list(
        range(len(trained.history["validation"]["auc"]))
    )
    assert [m.value for m in history] == pytest.approx(
        trained.history["validation"]["auc"]
    )
    # the xgboost flavour: loadable as such
    booster = mlflow.xgboost.load_model(f"runs:/{run_id}/model")
    assert booster.num_boosted_rounds() == trained.best_iteration + 1

    # its requirements pin the xgboost that trained it
    import xgboost

    requirements = mlflow.pyfunc.get_model_dependencies(f"runs:/{run_id}/model")
    with open(requirements) as lines:
        assert f"xgboost=={xgboost.__version__}" in lines.read().split()


def test_a_tuning_jobs_trials_are_child_runs_of_one_tuning_run(tmp_path, monkeypatch):
    """Trials named as SageMaker names a tuning job's training jobs log under one
    parent; a parent another trial made at the same moment is resolved to one."""
    from mlflow import MlflowClient

    from training.tracking import _tuning_run, tuning_trial

    assert tuning_trial("pipelines-abc123-tune-003-1a2b3c4d") == (
        "pipelines-abc123-tune",
        3,
    )
    assert tuning_trial("pipelines-abc123-train") is None
    assert tuning_trial("pipelines-abc123-tune-003-NOTHEX99") is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", (tmp_path / "art").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "churn-test")
    trained = train_model(
        synthetic(800, 1), synthetic(300, 2), SCHEMA, {**DEFAULTS, "num_round": 5}, 1
    )
    trials = []
    for index in (1, 2):
        name = f"pipelines-abc123-tune-{index:03d}-0000000{index}"
        monkeypatch.setenv("TRAINING_JOB_NAME", name)
        trials.append(log_training_run(trained))
    client = MlflowClient()
    runs = [client.get_run(r) for r in trials]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.run_name == "tune-abc123"
    assert parent.data.tags["tuning_job"] == "pipelines-abc123-tune"
    assert [r.info.run_name for r in runs] == ["trial-001-abc123", "trial-002-abc123"]
    history = client.get_metric_history(parent.info.run_id, "trial_validation_auc")
    assert sorted(m.step for m in history) == [1, 2]

    # two trials that both found no parent each made one: both keep the older
    experiment = parent.info.experiment_id
    newer = client.create_run(
        experiment,
        tags={"step": "TuningJob", "tuning_job": "pipelines-abc123-tune"},
    ).info.run_id
    assert _tuning_run(experiment, "pipelines-abc123-tune", "abc123") == (
        parent.info.run_id
    )
    assert newer != parent.info.run_id
