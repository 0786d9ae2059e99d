"""Log the Evaluate step's metrics, gate decision and report to the training run.

Active only when ``MLFLOW_TRACKING_URI`` is set and the model carries the MLflow run id
its Train step logged (``metadata.json``); the evaluation then lands in the same run as
the training that produced the model, one run per pipeline execution.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("processing.tracking")


def log_evaluation(report: dict[str, Any], output: Path) -> bool:
    """Log test metrics (``test_<name>``), the gate and the report files; True if
    logged.
    """
    run_id = report.get("model", {}).get("mlflow_run_id")
    if not os.environ.get("MLFLOW_TRACKING_URI") or run_id in (None, "", "none"):
        log.info("MLflow tracking is off or the model has no run id: not logging")
        return False
    import mlflow

    metrics = {
        f"test_{name}": float(entry["value"])
        for name, entry in report["binary_classification_metrics"].items()
        if isinstance(entry, dict) and "value" in entry
    }
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        gate = report.get("gate")
        if gate:
            mlflow.set_tags(
                {"gate_decision": gate["decision"], "gate_rule": gate["rule"][:5000]}
            )
            if gate.get("champion_auc") is not None:
                mlflow.log_metric("champion_test_auc", gate["champion_auc"])
        mlflow.log_artifact(str(output / "evaluation.json"), artifact_path="evaluation")
        mlflow.log_artifact(str(output / "report.html"), artifact_path="evaluation")
        mlflow.log_artifacts(str(output / "plots"), artifact_path="evaluation/plots")
    return True
