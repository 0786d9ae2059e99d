"""Evaluate step: score the test split and write ``evaluation.json``.

The file follows the model-quality layout SageMaker's model registry displays
(``binary_classification_metrics.<metric>.value``), and the pipeline reads the AUC from
it through a PropertyFile for the condition step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from features import SchemaError
from inference.model import LoadedModel, load_model, unpack_model
from processing.contract import ProcessingContract

log = logging.getLogger("processing.evaluate")


def evaluate(
    model: LoadedModel, test: pd.DataFrame, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of ``model`` on ``test``, in SageMaker's model-quality JSON layout."""
    schema = model.schema
    schema.check_frame(test)
    labels = test[schema.label].astype(int).to_numpy()
    if len(np.unique(labels)) < 2:
        raise SchemaError("the test split has only one class; AUC is undefined")
    scores = model.predict(schema.feature_matrix(test))
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()

    def value(x: float) -> dict[str, Any]:
        return {"value": float(x), "standard_deviation": "NaN"}

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
            "confusion_matrix": {
                "0": {"0": int(tn), "1": int(fp)},
                "1": {"0": int(fn), "1": int(tp)},
            },
        },
        "evaluation": {
            "rows": int(len(labels)),
            "positive_rate": float(labels.mean()),
            "decision_threshold": threshold,
        },
    }


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


def _read_parquet_dir(directory: Path) -> pd.DataFrame:
    files = sorted(directory.rglob("*.parquet"))
    if not files:
        raise SchemaError(f"no Parquet files under {directory}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="processing.evaluate")
    parser.add_argument("--model-dir", default="/opt/ml/processing/model")
    parser.add_argument("--test-dir", default="/opt/ml/processing/test")
    parser.add_argument("--output-dir", default="/opt/ml/processing/evaluation")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = ProcessingContract.from_environment()
    try:
        model_dir = contract.path(args.model_dir)
        archive = model_dir / "model.tar.gz"
        if archive.exists():
            model_dir = unpack_model(archive, model_dir / "unpacked")
        model = load_model(model_dir, threads=0)
        test_dir = contract.path(args.test_dir)
        report = evaluate(model, _read_parquet_dir(test_dir), args.threshold)
        summary = extract_summary(test_dir)
        if summary is not None:
            report["extract"] = summary
        output = contract.path(args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "evaluation.json").write_text(json.dumps(report, indent=2))
    except Exception as exc:
        contract.fail(f"evaluation failed: {type(exc).__name__}: {exc}")
        log.exception("evaluation failed")
        return 1
    log.info("test AUC %.4f", report["binary_classification_metrics"]["auc"]["value"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
