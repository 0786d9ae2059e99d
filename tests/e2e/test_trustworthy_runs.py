"""Runs a user can trust, through the CLI: a cache hit means the same data and code,
PREDICTIONS holds only customers the data still has, and MLflow keeps one record per
execution that no later execution rewrites.
"""

import re

import pytest
from mlflow import MlflowClient

from stack.warehouse import EmbeddedWarehouse
from tests.conftest import SMALL_CUSTOMERS, free_port, run_cli
from tests.e2e.test_whole_loop import state  # noqa: F401

pytestmark = pytest.mark.e2e
CACHEABLE = ("Extract", "Train", "Baseline", "Evaluate")
FEWER = SMALL_CUSTOMERS * 2 // 3


def execution_id(result):
    """The execution a run's summary is about (not one a cached step came from)."""
    return re.search(r"^Pipeline \S+, execution (\w+)$", result.stdout, re.M).group(1)


def auc_of(result):
    return float(re.search(r"Test metrics: auc (\d\.\d+)", result.stdout).group(1))


def orphans_and_rows(folder):
    """PREDICTIONS rows whose customer the data no longer has, and all rows."""
    with EmbeddedWarehouse(folder / "snowflake", "MLOPS", "CHURN").connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM PREDICTIONS p WHERE NOT EXISTS "
            "(SELECT 1 FROM customers c WHERE c.customer_id = p.CUSTOMER_ID)"
        )
        orphans = cursor.fetchone()[0]
        cursor.execute("SELECT COUNT(*) FROM PREDICTIONS")
        return orphans, cursor.fetchone()[0]


def runs_by_name(folder):
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    runs = [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
    ]
    return client, {run.info.run_name: run for run in runs}


def test_new_data_reruns_extract_and_train_and_mlflow_keeps_each_executions_record(
    state,  # noqa: F811
):
    port = free_port()

    def args(customers):
        return ("--state-dir", str(state), "--customers", str(customers),
                "--port", str(port))  # fmt: skip

    first = run_cli(*args(SMALL_CUSTOMERS))
    assert first.returncode == 0, first.stdout + first.stderr
    one = execution_id(first)
    _, after_first = runs_by_name(state)
    first_gate = after_first[f"gate-{one}"]

    # other data under the same AsOfDate and DataVersion=latest: a new fingerprint
    reseeded = run_cli(*args(FEWER))
    assert reseeded.returncode == 0, reseeded.stdout + reseeded.stderr
    two = execution_id(reseeded)
    assert "[cache]" not in reseeded.stdout
    for step in ("Extract", "Train"):
        assert f"[ ok ] {step}" in reseeded.stdout
    assert auc_of(reseeded) != auc_of(first)
    # the scores of that date are those of the customers the data has now
    orphans, rows = orphans_and_rows(state)
    assert orphans == 0 and 0 < rows < FEWER

    # the same data and code again: every cacheable step is the last run's
    again = run_cli(*args(FEWER))
    assert again.returncode == 0, again.stdout + again.stderr
    three = execution_id(again)
    for step in CACHEABLE:
        assert f"[cache] {step} reused from execution {two}" in again.stdout
    assert auc_of(again) == auc_of(reseeded)

    # MLflow: two training runs and three gate runs, one per execution
    client, runs = runs_by_name(state)
    assert set(runs) == {
        f"train-{one}", f"train-{two}", f"gate-{one}", f"gate-{two}", f"gate-{three}"
    }  # fmt: skip
    for execution, training in ((one, one), (two, two), (three, two)):
        tags = runs[f"gate-{execution}"].data.tags
        assert tags["pipeline_execution_id"] == execution
        assert tags["training_execution_id"] == training
        assert tags["mlflow.parentRunId"] == runs[f"train-{training}"].info.run_id
        assert tags["train_reused"] == str(execution != training).lower()
    # nothing an execution logged was rewritten by a later one
    assert runs[f"gate-{one}"].data.tags == first_gate.data.tags
    assert runs[f"gate-{one}"].data.metrics == first_gate.data.metrics
    for training in (one, two):
        assert "gate_decision" not in runs[f"train-{training}"].data.tags
        assert not any(
            k.startswith("test_") for k in runs[f"train-{training}"].data.metrics
        )

    # the approved version names its execution's run, which names the version back
    match = re.search(r"Model package: (\S+) \(version 3, Approved\)", again.stdout)
    assert match, again.stdout
    from stack.registry import LocalModelRegistry

    registry = LocalModelRegistry(state / "registry", "us-east-1")
    package = registry.get(match.group(1))
    run = client.get_run(package.customer_metadata["mlflow_run_id"])
    assert run.info.run_name == f"gate-{three}"
    assert run.data.tags["gate_decision"] == "register"
    assert run.data.tags["model_package_arn"] == match.group(1)
    assert run.data.tags["git_commit"] == package.customer_metadata["git_commit"]
    assert run.data.tags["data_version"] == package.customer_metadata["data_version"]
    assert len(run.data.tags["data_fingerprint"]) == 64
    assert package.customer_metadata["mlflow_training_run_id"] == (
        runs[f"train-{two}"].info.run_id
    )
