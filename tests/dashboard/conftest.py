"""A small local state for the dashboard: one execution record, two registered
versions, two drift checks and a PREDICTIONS table, all made through the same classes
the pipeline uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from dashboard.data import drift_prefix
from pipelines.local_runner import Execution, StepRecord
from snowflake.sagemaker_predictions.templates import predictions_ddl
from stack.config import Config, load_config
from stack.objectstore import LocalObjectStore, ObjectStore, join_uri
from stack.registry import LocalModelRegistry, ModelRegistry
from stack.warehouse import EmbeddedWarehouse, Warehouse

GROUP = "churn-models"
EXECUTION_ID = "a1b2c3d4e5f6"
FEATURES = ("tenure_days", "monthly_spend", "support_tickets_90d")
LATEST_AS_OF = date(2026, 6, 30)
EARLIER_AS_OF = date(2026, 3, 31)


@dataclass(frozen=True)
class DashboardState:
    config: Config
    store: LocalObjectStore
    warehouse: EmbeddedWarehouse
    drift_uris: list[str]


def state_config(state_dir: Path) -> Config:
    return load_config("local", {"state_dir": str(state_dir)}, environ={})


def _clean_environment(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLOPS_ENV", "local")
    monkeypatch.setenv("MLOPS_STATE_DIR", str(state_dir))


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """MLOPS_ENV=local and an empty state folder, as ``python -m dashboard`` passes
    them to the app; Streamlit's caches cleared around the test.
    """
    state_dir = tmp_path / "state"
    _clean_environment(monkeypatch, state_dir)
    with _fresh_caches():
        yield state_dir


@pytest.fixture(scope="module")
def _built_state(tmp_path_factory: pytest.TempPathFactory) -> DashboardState:
    """The state, built once per module (the tests only read it)."""
    state_dir = tmp_path_factory.mktemp("dashboard") / "state"
    config = state_config(state_dir)
    store = LocalObjectStore(state_dir / "s3")
    write_execution(state_dir / "executions")
    register_versions(config, store)
    uris = write_drift_results(config, store)
    warehouse = EmbeddedWarehouse(state_dir / "snowflake", "MLOPS", "CHURN")
    write_predictions(warehouse)
    return DashboardState(config, store, warehouse, uris)


@pytest.fixture
def dashboard_state(
    _built_state: DashboardState, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DashboardState]:
    """The environment pointing at a state with data in every page."""
    _clean_environment(monkeypatch, _built_state.config.state_dir)
    with _fresh_caches():
        yield _built_state


@contextmanager
def _fresh_caches() -> Iterator[None]:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        yield
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def write_execution(root: Path, execution_id: str = EXECUTION_ID) -> Execution:
    directory = root / execution_id
    directory.mkdir(parents=True)
    execution = Execution(
        execution_id=execution_id,
        pipeline_name="churn-pipeline",
        parameters={"AsOfDate": "2026-03-31", "AucThreshold": 0.7},
        directory=str(directory),
        status="Failed",
        started_at="2026-11-24T09:00:00+00:00",
        ended_at="2026-11-24T09:01:30+00:00",
        steps=[
            StepRecord(
                "Extract", "Processing", "Succeeded", "2026-11-24T09:00:00+00:00", 12.5
            ),
            StepRecord(
                "Train", "Training", "Succeeded", "2026-11-24T09:00:13+00:00", 40.0
            ),
            StepRecord(
                "CheckAuc",
                "Condition",
                "Failed",
                "2026-11-24T09:00:53+00:00",
                0.1,
                failure_reason="test AUC 0.61 < threshold 0.70",
            ),
        ],
    )
    execution.save()
    return execution


def register_versions(
    config: Config, store: ObjectStore, registry: ModelRegistry | None = None
) -> None:
    """Version 1 Approved (test AUC 0.8011), version 2 pending (0.8123)."""
    registry = registry or LocalModelRegistry(
        config.state_dir / "registry", config.aws.region
    )
    for version, (auc, status) in enumerate(
        [(0.8011, "Approved"), (0.8123, "PendingManualApproval")], start=1
    ):
        evaluation = join_uri(config.artifact_root, f"run{version}", "evaluation.json")
        report = {
            "binary_classification_metrics": {
                name: {"value": value, "standard_deviation": "NaN"}
                for name, value in (
                    ("auc", auc),
                    ("pr_auc", 0.5 + version / 100),
                    ("log_loss", 0.45),
                    ("f1", 0.44),
                )
            }
        }
        store.write_bytes(evaluation, json.dumps(report).encode())
        registry.register(
            {
                "ModelPackageGroupName": GROUP,
                "ModelApprovalStatus": status,
                "InferenceSpecification": {
                    "Containers": [
                        {"Image": "local/churn:1", "ModelDataUrl": "s3://bkt/m"}
                    ]
                },
                "ModelMetrics": {
                    "ModelQuality": {
                        "Statistics": {
                            "ContentType": "application/json",
                            "S3Uri": evaluation,
                        }
                    }
                },
                "CustomerMetadataProperties": {
                    "test_auc": str(auc),
                    "as_of_date": "2026-03-31",
                    "pipeline_execution_id": EXECUTION_ID,
                },
            }
        )


def drift_document(checked_at: str, psi: dict[str, float], threshold: float) -> dict:
    features = [
        {
            "name": name,
            "psi": value,
            "ks_statistic": value / 2,
            "ks_p_value": 0.0,
            "missing_fraction": 0.0,
            "baseline_missing_fraction": 0.0,
            "out_of_range_fraction": 0.0,
            "drifted": value > threshold,
        }
        for name, value in psi.items()
    ]
    return {
        "checked_at": checked_at,
        "endpoint": "churn-endpoint",
        "model_package_arn": f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{GROUP}/1",
        "source": "capture",
        "window": {"start": "2026-11-23T10:00:00Z", "end": checked_at},
        "rows": 4321,
        "features": features,
        "prediction": {"psi": 0.01, "mean": 0.21, "baseline_mean": 0.2},
        "performance": None,
        "violations": sum(f["drifted"] for f in features),
    }


def write_drift_results(config: Config, store: ObjectStore) -> list[str]:
    """Two checks a day apart: the first clean, the second with tenure_days drifted."""
    prefix = drift_prefix(config)
    checks = [
        (
            "2026-11-23T10:00:00Z",
            {"tenure_days": 0.02, "monthly_spend": 0.05, "support_tickets_90d": 0.01},
        ),
        (
            "2026-11-24T10:00:00Z",
            {"tenure_days": 0.41, "monthly_spend": 0.06, "support_tickets_90d": 0.02},
        ),
    ]
    uris = []
    for checked_at, psi in checks:
        folder = join_uri(prefix, checked_at.replace(":", "-"))
        document = drift_document(checked_at, psi, config.monitoring.psi_threshold)
        store.write_bytes(join_uri(folder, "drift.json"), json.dumps(document).encode())
        store.write_bytes(join_uri(folder, "report.html"), b"<html>report</html>")
        uris.append(join_uri(folder, "drift.json"))
    violations = {
        "violations": [
            {
                "feature_name": "tenure_days",
                "constraint_check_type": "baseline_drift_check",
                "description": "PSI 0.41 above 0.2",
            }
        ]
    }
    store.write_bytes(
        join_uri(uris[1].rsplit("/", 1)[0], "constraint_violations.json"),
        json.dumps(violations).encode(),
    )
    return uris


def write_predictions(warehouse: Warehouse) -> None:
    """30 scores as of LATEST_AS_OF (20 by version 1, 10 by version 2), 5 earlier."""
    arn = f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{GROUP}/"
    scored_at = datetime(2026, 11, 24, 9, 0, tzinfo=UTC).replace(tzinfo=None)
    rows = [
        (i, LATEST_AS_OF, (i % 20) / 20 + 0.01, arn + "1", EXECUTION_ID, "h", scored_at)
        for i in range(20)
    ]
    rows += [
        (100 + i, LATEST_AS_OF, 0.97, arn + "2", EXECUTION_ID, "h", scored_at)
        for i in range(10)
    ]
    rows += [
        (i, EARLIER_AS_OF, 0.3, arn + "1", EXECUTION_ID, "h", scored_at)
        for i in range(5)
    ]
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(predictions_ddl("PREDICTIONS", "CUSTOMER_ID", "NUMBER(38,0)"))
        cursor.executemany(
            "INSERT INTO PREDICTIONS (CUSTOMER_ID, AS_OF_DATE, SCORE, MODEL_PACKAGE_ARN,"
            " PIPELINE_EXECUTION_ID, FEATURES_HASH, SCORED_AT)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
