"""Evaluate step: score the test split, write the evaluation.

The metrics are those of SCORE, what the endpoint answers: the booster's score through
the model's calibration (``LoadedModel.predict``). The report also compares the
booster's own scores with SCORE (``calibration.before`` and ``.after``: reliability
deciles, expected calibration error, AUC, mean score).

``evaluation.json`` follows the model-quality layout SageMaker's model registry displays
(``binary_classification_metrics.<metric>.value``). The Gate step
(``processing.gate``) judges the model from it, and the pipeline's condition reads
the Gate's copy, with its decision, through a PropertyFile. Beside it: PNG plots
and ``report.html``, one self-contained page (``processing.report``). Evaluate logs
nothing to MLflow: it is cached and isolated; the Gate step records the evaluation
in a run of its execution (``processing.tracking``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features import SchemaError
from features.channels import data_window, read_split
from inference import artifact
from inference.calibration import Calibration
from inference.model import load_model
from pipelines.process_gc import run_process
from pipelines.spec import (
    MODEL,
    Input,
    Output,
    ProcessingSpec,
    PropertyFile,
    StepOutput,
    python_module,
)
from pipelines.step_names import EVALUATE, EVALUATION_REPORT, EXTRACT
from processing.contract import ProcessingContract, log_first_read
from processing.report import render_html, write_plots

if TYPE_CHECKING:
    # scikit-learn, XGBoost (through load_model) and matplotlib are imported where
    # used: the Gate step imports this module, and with no champion to score it
    # needs none of them
    import pandas as pd

    from inference.model import LoadedModel

log = logging.getLogger("processing.evaluate")

MODEL_DIR, TEST_DIR = "/opt/ml/processing/model", "/opt/ml/processing/test"
OUTPUT_DIR = "/opt/ml/processing/evaluation"
REPORT_FILE = "evaluation.json"

# Cached: the metrics depend only on the model and the test split (the verdict, which
# depends on the registry's champion, is the Gate's).
SPEC = ProcessingSpec(
    name=EVALUATE,
    command=python_module("processing.evaluate"),
    inputs=(
        Input("model", MODEL, MODEL_DIR),
        Input("test", StepOutput(EXTRACT, "test"), TEST_DIR),
    ),
    outputs=(Output("evaluation", OUTPUT_DIR),),
    property_files=(PropertyFile(EVALUATION_REPORT, "evaluation", REPORT_FILE),),
    cached=True,
    offline=True,
)


def evaluate(
    model: LoadedModel, test: pd.DataFrame, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of ``model``'s SCORE on ``test``, in SageMaker's model-quality JSON
    layout, with the calibration's before and after.
    """
    labels, raw, scores = score(model, test)
    return metrics_report(labels, scores, threshold, raw, model.calibration)


def score(
    model: LoadedModel, test: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels of ``test``, the booster's raw scores and SCORE (calibrated, as the
    endpoint answers) for them.
    """
    schema = model.schema
    schema.check_frame(test)
    labels = test[schema.label].astype(int).to_numpy()
    if len(np.unique(labels)) < 2:
        raise SchemaError("the test split has only one class; AUC is undefined")
    matrix = schema.feature_matrix(test)
    return labels, model.predict_raw(matrix), model.predict(matrix)


def metrics_report(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    raw_scores: np.ndarray | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """The metrics of ``scores`` against ``labels`` (see ``evaluate``).

    Args:
        raw_scores: the booster's scores before ``calibration`` turned them into
            ``scores``, for the before/after comparison (default: ``scores``, the
            identity).
    """
    from sklearn import metrics

    calibration = calibration or Calibration.identity()
    before = reliability(labels, scores if raw_scores is None else raw_scores)
    after = reliability(labels, scores)
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()

    def value(x: float) -> dict[str, Any]:
        return {"value": float(x), "standard_deviation": "NaN"}

    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    return {
        "binary_classification_metrics": {
            "auc": value(metrics.roc_auc_score(labels, scores)),
            "pr_auc": value(metrics.average_precision_score(labels, scores)),
            "log_loss": value(
                metrics.log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7))
            ),
            "brier_score": value(metrics.brier_score_loss(labels, scores)),
            "accuracy": value(metrics.accuracy_score(labels, predicted)),
            "precision": value(
                metrics.precision_score(labels, predicted, zero_division=0)
            ),
            "recall": value(metrics.recall_score(labels, predicted, zero_division=0)),
            "f1": value(metrics.f1_score(labels, predicted, zero_division=0)),
            "lift_top_decile": value(top_decile_lift(labels, scores)),
            "expected_calibration_error": value(after["expected_calibration_error"]),
            "confusion_matrix": {
                "0": {"0": int(tn), "1": int(fp)},
                "1": {"0": int(fn), "1": int(tp)},
            },
            # curves thinned to at most 101 points: the registry displays them
            "receiver_operating_characteristic_curve": {
                "false_positive_rates": _thin(fpr),
                "true_positive_rates": _thin(tpr),
            },
            "precision_recall_curve": {
                "precisions": _thin(precision),
                "recalls": _thin(recall),
            },
        },
        "calibration": {
            "score": calibration.describe(),  # what SCORE is, in words
            "fitted": calibration.to_dict(),
            "before": before,
            "after": after,
        },
        "evaluation": {
            "rows": int(len(labels)),
            "positive_rate": float(labels.mean()),
            "decision_threshold": threshold,
        },
    }


def top_decile_lift(labels: np.ndarray, scores: np.ndarray) -> float:
    """Churn rate among the 10% highest scores over the overall churn rate."""
    top = max(1, int(np.ceil(len(scores) * 0.1)))
    order = np.argsort(-scores, kind="stable")[:top]
    return float(labels[order].mean() / labels.mean())


def reliability(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """How well ``scores`` read as probabilities: their deciles against the observed
    churn rate, the expected calibration error, the AUC and the mean score.
    """
    from sklearn import metrics

    return {
        **calibration_bins(labels, scores),
        "auc": float(metrics.roc_auc_score(labels, scores)),
        "mean_score": float(scores.mean()),
    }


def calibration_bins(
    labels: np.ndarray, scores: np.ndarray, bins: int = 10
) -> dict[str, Any]:
    """Mean predicted vs observed rate per score decile, and the expected calibration
    error (their gap, weighted by rows).
    """
    order = np.argsort(scores, kind="stable")
    rows = []
    error = 0.0
    for i, chunk in enumerate(np.array_split(order, bins)):
        if len(chunk) == 0:
            continue
        predicted, observed = float(scores[chunk].mean()), float(labels[chunk].mean())
        error += len(chunk) / len(scores) * abs(predicted - observed)
        rows.append(
            {
                "bin": i + 1,
                "count": int(len(chunk)),
                "mean_predicted": predicted,
                "observed_rate": observed,
            }
        )
    return {"bins": rows, "expected_calibration_error": error}


def _thin(values: np.ndarray, points: int = 101) -> list[float]:
    if len(values) <= points:
        return [float(v) for v in values]
    index = np.linspace(0, len(values) - 1, points).round().astype(int)
    return [float(v) for v in values[index]]


def feature_importance(model: LoadedModel) -> dict[str, float]:
    """Total gain per feature (features never split on are 0)."""
    gains = model.booster.get_score(importance_type="total_gain")
    importance = {}
    for name in model.schema.feature_names:
        gain = gains.get(name, 0.0)  # a list only for vector-leaf models (not ours)
        importance[name] = float(sum(gain) if isinstance(gain, list) else gain)
    return importance


def extract_summary(directory: Path) -> dict[str, Any] | None:
    """What the Extract step recorded (its ``manifest-<host>.json`` files beside the
    test split): rows per split over every instance, the data version, the query hash.

    It goes into ``evaluation.json``, which the registered model package carries.
    """
    manifests = [
        json.loads(p.read_text()) for p in sorted(directory.rglob("manifest-*.json"))
    ]
    if not manifests:
        return None
    rows: dict[str, int] = {}
    for manifest in manifests:
        for split, count in manifest.get("rows", {}).items():
            rows[split] = rows.get(split, 0) + int(count)
    first = manifests[0]
    return {
        "feature_set": first.get("feature_set"),
        "query_sha256": first.get("query_sha256"),
        "data_fingerprint": first.get("data_fingerprint"),  # the Preflight step's
        "parameters": first.get("parameters"),
        # one per instance: with DataVersion=latest each took its own instant
        "data_versions": {
            str(m.get("host", i)): m.get("data_version")
            for i, m in enumerate(manifests)
        },
        "instances": len(manifests),
        "rows": rows,
        "rows_total": sum(rows.values()),
    }


def run_evaluation(
    model_dir: Path,
    test_dir: Path,
    output: Path,
    threshold: float,
) -> dict[str, Any]:
    """Score the model, write ``evaluation.json``, the plots and ``report.html``
    into ``output``; return the report.
    """
    test = read_split(test_dir)
    model = load_model(model_dir, threads=0)
    labels, raw, scores = score(model, test)
    report = metrics_report(labels, scores, threshold, raw, model.calibration)
    summary = extract_summary(test_dir)
    if summary is not None:
        report["extract"] = summary
    report["data_window"] = data_window(test_dir)
    report["model"] = {
        "mlflow_run_id": str(model.metadata.get("mlflow_run_id") or "none"),
        "git_commit": str(model.metadata.get("git_commit") or "unknown"),
        "best_iteration": model.metadata.get("best_iteration"),
    }
    output.mkdir(parents=True, exist_ok=True)
    plots = write_plots(
        labels, scores, report, feature_importance(model), output / "plots"
    )
    (output / "report.html").write_text(render_html(report, plots))
    (output / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="processing.evaluate")
    parser.add_argument("--model-dir", default=MODEL_DIR)
    parser.add_argument("--test-dir", default=TEST_DIR)
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="decision threshold"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = ProcessingContract.from_environment()
    try:
        model_dir = contract.path(args.model_dir)
        log_first_read(log, f"the model in {model_dir}")
        model_dir = artifact.folder_in(model_dir)
        output = contract.path(args.output_dir)
        report = run_evaluation(
            model_dir, contract.path(args.test_dir), output, args.threshold
        )
    except Exception as exc:
        contract.fail(f"evaluation failed: {type(exc).__name__}: {exc}")
        log.exception("evaluation failed")
        return 1
    before, after = report["calibration"]["before"], report["calibration"]["after"]
    log.info(
        "test AUC %.4f; ECE %.4f before calibration, %.4f after (AUC %.4f, %.4f)",
        report["binary_classification_metrics"]["auc"]["value"],
        before["expected_calibration_error"],
        after["expected_calibration_error"],
        before["auc"],
        after["auc"],
    )
    return 0


if __name__ == "__main__":
    run_process(main)
