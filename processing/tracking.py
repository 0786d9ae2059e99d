"""MLflow's record of an execution after Train: one run per execution, never rewritten.

Train logs the training run (``training.tracking``). The Gate step, never cached,
starts a run of this execution (``gate-<execution id>``) as a child of the training
run that produced the model, whether Train ran in this execution or was reused from an
earlier one, and logs there the test metrics, the gate's decision, the report and what
the model was made from (data version and fingerprint, git commit, the training run
and its execution). The training run is never written again, so the run that
produced an approved version keeps its own story. Once Register has made a package,
the Track step (``python -m processing.tracking``) puts its ARN on the same run; the
package carries the run id in its metadata.

Active only when ``MLFLOW_TRACKING_URI`` is in the job's environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.process_gc import run_process
from pipelines.spec import ProcessingSpec, ReportValue, StepProperty, python_module
from pipelines.step_names import GATE, GATE_REPORT, REGISTER, TRACK
from processing.contract import ProcessingContract, log_first_read

log = logging.getLogger("processing.tracking")

NO_RUN = "none"  # the run id a report carries when nothing was tracked

# The registered package's ARN onto the execution's MLflow run (never cached); in the
# pipeline only when the jobs have a tracking server.
SPEC = ProcessingSpec(
    name=TRACK,
    command=python_module("processing.tracking"),
    arguments=(
        "--run-id",
        ReportValue(GATE, GATE_REPORT, "tracking.run_id"),
        "--model-package-arn",
        StepProperty(REGISTER, "ModelPackageArn"),
    ),
    tracking=True,
)


def _tracking_on() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def log_gate_run(report: dict[str, Any], output: Path, execution_id: str) -> str:
    """Log the evaluation and the gate's verdict in a run of ``execution_id``; its id.

    ``NO_RUN`` when tracking is off or the model names no training run.
    """
    training_run_id = str(report.get("model", {}).get("mlflow_run_id") or NO_RUN)
    if not _tracking_on() or training_run_id == NO_RUN:
        log.info("MLflow tracking is off or the model has no run id: not logging")
        return NO_RUN
    import mlflow
    from mlflow import MlflowClient

    training = MlflowClient().get_run(training_run_id)
    training_execution = training.data.tags.get("pipeline_execution_id", "unknown")
    extract = report.get("extract") or {}
    gate = report.get("gate") or {}
    tags = {
        "pipeline_execution_id": execution_id,
        "step": GATE,
        # a child of the training run: MLflow shows each execution that judged it
        "mlflow.parentRunId": training_run_id,
        "training_run_id": training_run_id,
        "training_execution_id": training_execution,
        "train_reused": str(training_execution != execution_id).lower(),
        "git_commit": str(report.get("model", {}).get("git_commit") or "unknown"),
        "data_version": str(report.get("data_window", {}).get("data_version", "")),
        "data_fingerprint": str(extract.get("data_fingerprint") or "unknown"),
    }
    if gate:
        tags.update(gate_decision=gate["decision"], gate_rule=gate["rule"][:5000])
    metrics = {
        f"test_{name}": float(entry["value"])
        for name, entry in report["binary_classification_metrics"].items()
        if isinstance(entry, dict) and "value" in entry
    }
    if gate.get("champion_auc") is not None:
        metrics["champion_test_auc"] = float(gate["champion_auc"])
    calibration = report.get("calibration") or {}
    for when in ("before", "after"):  # the booster's own scores, then SCORE's
        if when in calibration:
            metrics[f"test_ece_{when}_calibration"] = float(
                calibration[when]["expected_calibration_error"]
            )
    if calibration.get("score"):
        tags["score"] = calibration["score"]
    mlflow.set_experiment(experiment_id=training.info.experiment_id)
    with mlflow.start_run(run_name=f"gate-{execution_id}", tags=tags) as run:
        mlflow.log_metrics(metrics)
        for name in ("evaluation.json", "report.html"):
            if (output / name).exists():
                mlflow.log_artifact(str(output / name), artifact_path="evaluation")
        plots = output / "plots"
        if plots.is_dir():
            mlflow.log_artifacts(str(plots), artifact_path="evaluation/plots")
        return str(run.info.run_id)


def tag_registration(run_id: str, model_package_arn: str) -> bool:
    """Put the registered package on the execution's run; True if tagged."""
    if not _tracking_on() or run_id in ("", NO_RUN):
        log.info("MLflow tracking is off or the execution has no run: not tagging")
        return False
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "model_package_arn", model_package_arn)
    client.set_tag(run_id, "registered", "true")
    log.info("run %s: registered as %s", run_id, model_package_arn)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """The Track step: the registered package's ARN onto the execution's run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="processing.tracking")
    parser.add_argument("--run-id", required=True, help="the execution's Gate run")
    parser.add_argument("--model-package-arn", required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = ProcessingContract.from_environment()
    try:
        log_first_read(log, f"MLflow run {args.run_id}")
        tag_registration(args.run_id, args.model_package_arn)
    except Exception as exc:
        contract.fail(f"Track failed: {type(exc).__name__}: {exc}")
        log.exception("tracking the registration failed")
        return 1
    return 0


if __name__ == "__main__":
    run_process(main)
