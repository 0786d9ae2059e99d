"""The training baseline: statistics and constraints in Model Monitor's format.

Written by the pipeline's Baseline step (``python -m monitoring.baseline``) from the
training split, and attached to the model package as its ``DriftCheckBaselines``
(``ModelDataQuality``), so the drift check, and on AWS a Model Monitor schedule, judge
captured data against the data the model learnt from.

Numerical columns carry Model Monitor's ``kll`` distribution: ten equal-width buckets
between the minimum and the maximum, and a quantile sketch. Our sketch is one level of
``SKETCH_ITEMS`` exact quantiles of the column (every item of equal weight, as in a
KLL sketch's level 0), which is what the drift check needs for PSI and KS; a sketch
Model Monitor's analyzer wrote (several levels, an item at level ``h`` weighing
``2**h``) is read the same way.

Beside them, ``prediction_statistics.json`` (the same format, one column named
``prediction``) holds the scores the model gave the held-out test split: the baseline
of prediction drift.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.channels import read_split
from features.schema import FeatureSchema
from inference import artifact
from inference.model import load_model
from monitoring import formats
from pipelines.process_gc import run_process
from pipelines.spec import (
    MODEL,
    Input,
    Output,
    ProcessingSpec,
    StepOutput,
    python_module,
)
from pipelines.step_names import BASELINE, EXTRACT
from processing.contract import ProcessingContract, log_first_read

log = logging.getLogger("monitoring.baseline")

MODEL_DIR, TRAIN_DIR, TEST_DIR = (
    "/opt/ml/processing/model",
    "/opt/ml/processing/train",
    "/opt/ml/processing/test",
)
OUTPUT_DIR = "/opt/ml/processing/baseline"

# Cached: the statistics depend only on the model and the splits.
SPEC = ProcessingSpec(
    name=BASELINE,
    command=python_module("monitoring.baseline"),
    inputs=(
        Input("model", MODEL, MODEL_DIR),
        Input("train", StepOutput(EXTRACT, "train"), TRAIN_DIR),
        Input("test", StepOutput(EXTRACT, "test"), TEST_DIR),
    ),
    outputs=(Output("baseline", OUTPUT_DIR),),
    cached=True,
    offline=True,
)

SKETCH_ITEMS = 1024
BUCKETS = 10
PREDICTION = "prediction"
STATISTICS_FILE = "statistics.json"
CONSTRAINTS_FILE = "constraints.json"
PREDICTION_FILE = "prediction_statistics.json"


@dataclass(frozen=True)
class Baseline:
    statistics: dict[str, Any]
    constraints: dict[str, Any]
    prediction: dict[str, Any] | None = None  # statistics of the "prediction" column

    def feature(self, name: str) -> dict[str, Any] | None:
        return next((f for f in self.statistics["features"] if f["name"] == name), None)

    def constraint(self, name: str) -> dict[str, Any] | None:
        return next(
            (f for f in self.constraints["features"] if f["name"] == name), None
        )

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / STATISTICS_FILE).write_text(json.dumps(self.statistics, indent=1))
        (directory / CONSTRAINTS_FILE).write_text(
            json.dumps(self.constraints, indent=1)
        )
        if self.prediction is not None:
            (directory / PREDICTION_FILE).write_text(
                json.dumps(self.prediction, indent=1)
            )

    @classmethod
    def from_documents(
        cls,
        statistics: Any,
        constraints: Any,
        prediction: Any | None = None,
    ) -> Baseline:
        """Check each document against its documented fields (FormatError if not)."""
        formats.check(statistics, formats.STATISTICS, STATISTICS_FILE)
        formats.check(constraints, formats.CONSTRAINTS, CONSTRAINTS_FILE)
        if prediction is not None:
            formats.check(prediction, formats.STATISTICS, PREDICTION_FILE)
        return cls(statistics, constraints, prediction)

    @classmethod
    def read(cls, directory: Path) -> Baseline:
        def load(name: str) -> Any:
            path = directory / name
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise formats.FormatError(f"{name}: not JSON ({exc})") from None

        prediction = (
            load(PREDICTION_FILE) if (directory / PREDICTION_FILE).exists() else None
        )
        return cls.from_documents(
            load(STATISTICS_FILE), load(CONSTRAINTS_FILE), prediction
        )


def inferred_type(dtype: str) -> str:
    return "Integral" if dtype == "int" else "Fractional"


def column_statistics(name: str, values: np.ndarray, kind: str) -> dict[str, Any]:
    """One feature's entry of ``statistics.json`` (``values``: float, NaN missing)."""
    present = np.sort(values[~np.isnan(values)])
    missing = int(values.size - present.size)
    numbers: dict[str, Any] = {
        "common": {"num_present": int(present.size), "num_missing": missing}
    }
    if present.size:
        low, high = float(present[0]), float(present[-1])
        numbers |= {
            "mean": float(present.mean()),
            "sum": float(present.sum()),
            "std_dev": float(present.std()),
            "min": low,
            "max": high,
        }
        edges = np.linspace(low, high, BUCKETS + 1) if high > low else None
        if edges is None:
            buckets = [{"lower_bound": low, "upper_bound": high, "count": present.size}]
        else:
            counts = np.histogram(present, bins=edges)[0]
            buckets = [
                {"lower_bound": float(a), "upper_bound": float(b), "count": int(c)}
                for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
            ]
        ranks = np.linspace(0, present.size - 1, min(SKETCH_ITEMS, present.size))
        items = present[np.round(ranks).astype(np.int64)]
    else:
        numbers |= {"mean": 0.0, "sum": 0.0, "std_dev": 0.0, "min": 0.0, "max": 0.0}
        buckets, items = [], np.empty(0)
    numbers["distribution"] = {
        "kll": {
            "buckets": buckets,
            "sketch": {
                "parameters": {"c": 0.64, "k": float(SKETCH_ITEMS)},
                "data": [items.tolist()],
            },
        }
    }
    return {"name": name, "inferred_type": kind, "numerical_statistics": numbers}


def dataset_statistics(
    frame: pd.DataFrame, columns: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """``statistics.json`` of ``frame``'s ``columns`` (name, inferred type)."""
    return {
        "version": 0.0,
        "dataset": {"item_count": int(len(frame))},
        "features": [
            column_statistics(
                name, pd.to_numeric(frame[name], errors="coerce").to_numpy(float), kind
            )
            for name, kind in columns
        ],
    }


def suggest_constraints(statistics: dict[str, Any]) -> dict[str, Any]:
    """``constraints.json`` as Model Monitor's baselining job suggests it: each
    feature's observed completeness and sign, and the comparison settings.
    """
    features = []
    for feature in statistics["features"]:
        numbers = feature["numerical_statistics"]
        common = numbers["common"]
        total = common["num_present"] + common["num_missing"]
        features.append(
            {
                "name": feature["name"],
                "inferred_type": feature["inferred_type"],
                "completeness": round(common["num_present"] / total, 6)
                if total
                else 1.0,
                "num_constraints": {"is_non_negative": bool(numbers["min"] >= 0)},
            }
        )
    return {
        "version": 0.0,
        "features": features,
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "emit_metrics": "Enabled",
            "datatype_check_threshold": 1.0,
            "domain_content_threshold": 1.0,
            "distribution_constraints": {
                "perform_comparison": "Enabled",
                "comparison_threshold": 0.1,
                "comparison_method": "Robust",
                "categorical_comparison_threshold": 0.1,
                "categorical_drift_method": "LInfinity",
            },
        },
    }


def feature_columns(schema: FeatureSchema) -> list[tuple[str, str]]:
    return [(f.name, inferred_type(f.dtype)) for f in schema.features]


def build_baseline(
    train: pd.DataFrame, schema: FeatureSchema, predictions: np.ndarray | None = None
) -> Baseline:
    statistics = dataset_statistics(train, feature_columns(schema))
    prediction = None
    if predictions is not None:
        prediction = dataset_statistics(
            pd.DataFrame({PREDICTION: predictions}), [(PREDICTION, "Fractional")]
        )
    return Baseline.from_documents(
        statistics, suggest_constraints(statistics), prediction
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The Baseline step, under the processing container contract."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="monitoring.baseline")
    parser.add_argument("--model-dir", default=MODEL_DIR)
    parser.add_argument("--train-dir", default=TRAIN_DIR)
    parser.add_argument("--test-dir", default=TEST_DIR)
    parser.add_argument("--output-dir", default=OUTPUT_DIR)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = ProcessingContract.from_environment()
    try:
        train_dir = contract.path(args.train_dir)
        log_first_read(log, f"the training split in {train_dir}")
        train = read_split(train_dir)
        test = read_split(contract.path(args.test_dir))
        # load_model imports XGBoost (and the scikit-learn it imports) only now
        model = load_model(artifact.folder_in(contract.path(args.model_dir)), threads=0)
        predictions = model.predict(model.schema.feature_matrix(test))
        baseline = build_baseline(train, model.schema, predictions)
        baseline.write(contract.path(args.output_dir))
    except Exception as exc:
        contract.fail(f"baseline failed: {type(exc).__name__}: {exc}")
        log.exception("baseline failed")
        return 1
    log.info(
        "baseline of %d training rows, %d features; %d test predictions",
        baseline.statistics["dataset"]["item_count"],
        len(baseline.statistics["features"]),
        len(predictions),
    )
    return 0


if __name__ == "__main__":
    run_process(main)
