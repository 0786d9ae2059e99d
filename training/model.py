"""What training produces, and how it is written as the model artifact's folder.

The folder (``model.json``, the calibration, ``schema.json``, ``metadata.json``) is
what the Train step packs into ``model.tar.gz``, what MLflow logs with the run, and
what ``inference.model.load_model`` reads back for serving, evaluation and the gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xgboost as xgb

from features import FeatureSchema
from inference.calibration import FILE as CALIBRATION_FILE
from inference.calibration import Calibration


@dataclass
class TrainedModel:
    booster: xgb.Booster
    schema: FeatureSchema
    hyperparameters: dict[str, Any]
    history: dict[str, dict[str, list[float]]]
    best_iteration: int
    calibration: Calibration
    metadata: dict[str, Any] = field(default_factory=dict)


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
