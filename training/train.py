"""Train step: an XGBoost churn classifier with early stopping on the validation split.

``train_model`` is pure (frames and hyperparameters in, a booster and its record out);
``main`` is the entry point the training container runs (``docker run IMAGE train``
reaches it through the image's entrypoint). The model folder it writes holds everything
serving needs: the booster, its calibration (what makes its score a churn
probability, ``inference.calibration``), the feature schema and the training summary.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features import FeatureSchema, SchemaError, load_feature_set
from inference.calibration import FILE as CALIBRATION_FILE
from inference.calibration import Calibration, CalibrationError
from training.calibration import fit_platt
from training.contract import TrainingContract
from training.hyperparameters import (
    HyperparameterError,
    parse_hyperparameters,
)

log = logging.getLogger("training.train")


def read_channel(directory: Path) -> pd.DataFrame:
    files = sorted(directory.rglob("*.parquet"))
    if not files:
        raise SchemaError(f"no Parquet files in channel {directory.name}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@dataclass
class TrainedModel:
    booster: xgb.Booster
    schema: FeatureSchema
    hyperparameters: dict[str, Any]
    history: dict[str, dict[str, list[float]]]
    best_iteration: int
    calibration: Calibration
    metadata: dict[str, Any] = field(default_factory=dict)


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    schema: FeatureSchema,
    hyperparameters: Mapping[str, Any],
    threads: int = 0,
    checkpoint_dir: Path | None = None,
) -> TrainedModel:
    """Fit the classifier, then its calibration on the validation split.

    Class imbalance is offset with ``scale_pos_weight``, which inflates the booster's
    scores; the calibration turns them back into churn probabilities. Rows are ordered
    by entity id first, so the model does not depend on how the extract step happened
    to shard or order its files.
    """
    schema.check_frame(train)
    schema.check_frame(validation)
    train = train.sort_values(schema.entity_id, kind="stable", ignore_index=True)
    validation = validation.sort_values(
        schema.entity_id, kind="stable", ignore_index=True
    )
    labels = train[schema.label].astype(int).to_numpy()
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise SchemaError("the training split has only one class; cannot train")
    dtrain = xgb.DMatrix(
        schema.feature_matrix(train), label=labels, feature_names=schema.feature_names
    )
    dvalid = xgb.DMatrix(
        schema.feature_matrix(validation),
        label=validation[schema.label].astype(int).to_numpy(),
        feature_names=schema.feature_names,
    )
    hp = dict(hyperparameters)
    params = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "max_depth": hp["max_depth"],
        "eta": hp["eta"],
        "subsample": hp["subsample"],
        "colsample_bytree": hp["colsample_bytree"],
        "min_child_weight": hp["min_child_weight"],
        "lambda": hp["reg_lambda"],
        "scale_pos_weight": (len(labels) - positives) / positives,
        "tree_method": "hist",
        "seed": hp["seed"],
        "nthread": threads,
    }
    history: dict[str, dict[str, list[float]]] = {}
    resume, done, callbacks = None, 0, []
    if checkpoint_dir is not None:
        from training import checkpoints

        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        found = checkpoints.latest(checkpoint_dir)
        if found:
            resume, done = xgb.Booster(model_file=str(found[0])), found[1]
            log.info("resuming from %s (%d rounds done)", found[0].name, done)
        callbacks.append(
            xgb.callback.TrainingCheckPoint(
                checkpoint_dir, name="model", interval=checkpoints.INTERVAL
            )
        )
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=max(hp["num_round"] - done, 1),
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=hp["early_stopping_rounds"],
        evals_result=history,
        verbose_eval=False,
        xgb_model=resume,
        callbacks=callbacks,
    )
    best = int(booster.best_iteration)
    calibration = fit_platt(
        booster[: best + 1].predict(dvalid), dvalid.get_label(), "validation"
    )
    metadata = {
        "best_iteration": best,
        # history covers only the rounds of this job when it resumed a checkpoint
        "best_validation_auc": float(history["validation"]["auc"][max(best - done, 0)]),
        "resumed_from_round": done,
        "train_rows": len(train),
        "validation_rows": len(validation),
        "train_positive_rate": positives / len(labels),
        "score": calibration.describe(),
        "feature_statistics": _statistics(train, schema),
        "versions": {
            "python": platform.python_version(),
            "xgboost": xgb.__version__,
            "pandas": pd.__version__,
        },
        "hyperparameters": hp,
    }
    return TrainedModel(booster, schema, hp, history, best, calibration, metadata)


def _statistics(
    frame: pd.DataFrame, schema: FeatureSchema
) -> dict[str, dict[str, float | None]]:
    stats = {}
    for name in schema.feature_names:
        column = frame[name].astype("float64")
        stats[name] = {
            "mean": _finite(column.mean()),
            "std": _finite(column.std()),
            "min": _finite(column.min()),
            "max": _finite(column.max()),
            "null_fraction": float(column.isna().mean()),
        }
    return stats


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def save_model(model: TrainedModel, model_dir: Path) -> None:
    """Write the booster (trimmed to the best iteration), its calibration, the schema
    and the metadata.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    best = model.booster[: model.best_iteration + 1]
    best.save_model(model_dir / "model.json")
    (model_dir / CALIBRATION_FILE).write_text(
        json.dumps(model.calibration.to_dict(), indent=2)
    )
    (model_dir / "schema.json").write_text(json.dumps(model.schema.to_dict(), indent=2))
    (model_dir / "metadata.json").write_text(json.dumps(model.metadata, indent=2))


def data_window(channel: Path) -> dict[str, str]:
    """As-of date, label window and data version from the Extract's manifests in
    ``channel`` (empty when it wrote none).
    """
    manifests = [
        json.loads(p.read_text()) for p in sorted(channel.rglob("manifest-*.json"))
    ]
    if not manifests:
        return {}
    parameters = manifests[0].get("parameters") or {}
    versions = sorted(
        {str((m.get("data_version") or {}).get("timestamp")) for m in manifests}
    )
    return {
        "as_of_date": str(parameters.get("as_of", "")),
        "label_window_days": str(parameters.get("label_window_days", "")),
        "data_version": " ".join(versions),  # the registry allows no commas
    }


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m training.train",
        description="The Train step (docker run IMAGE train): reads SageMaker's "
        "training contract (/opt/ml/input/config/*.json, the train and validation "
        "channels) and writes the model to /opt/ml/model; it takes no arguments.",
    ).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    contract = TrainingContract.from_environment()
    try:
        hp = parse_hyperparameters(contract.hyperparameters)
        schema = load_feature_set(hp["feature_set"]).schema
        for required in ("train", "validation"):
            if required not in contract.channels:
                raise SchemaError(f"the {required} channel is missing")
        train = read_channel(contract.channels["train"])
        validation = read_channel(contract.channels["validation"])
        checkpoint_dir = None
        checkpoint_root = (
            contract.root / "checkpoints"
        )  # exists when SageMaker syncs it
        if checkpoint_root.is_dir():
            from training.checkpoints import fingerprint

            checkpoint_dir = checkpoint_root / fingerprint(
                hp, [contract.channels["train"], contract.channels["validation"]]
            )
        model = train_model(
            train, validation, schema, hp, contract.num_cpus, checkpoint_dir
        )
        git_commit = os.environ.get("GIT_COMMIT") or "unknown"
        window = data_window(contract.channels["train"])
        from training.tracking import log_training_run

        run_id = log_training_run(model, {"git_commit": git_commit, **window})
        # the run id and commit travel with the model: Evaluate logs to the same
        # run and the registered package carries both
        model.metadata.update(
            mlflow_run_id=run_id, git_commit=git_commit, data_window=window
        )
        save_model(model, contract.model_dir)
    except (HyperparameterError, SchemaError, CalibrationError) as exc:
        contract.fail(str(exc))
        log.error("%s", exc)
        return 1
    except Exception as exc:
        contract.fail(f"{type(exc).__name__}: {exc}")
        log.exception("training failed")
        return 1
    log.info(
        "trained %d rounds (best %d), validation AUC %.4f; score: %s",
        len(model.history["validation"]["auc"]),
        model.best_iteration,
        model.metadata["best_validation_auc"],
        model.calibration.describe(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
