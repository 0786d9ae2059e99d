"""What training produces, written as the model artifact's folder
(``inference.artifact``): what the Train step leaves in /opt/ml/model (SageMaker packs
it into ``model.tar.gz``) and what MLflow logs with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xgboost as xgb

from features import FeatureSchema
from inference import artifact
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
    best = model.booster[: model.best_iteration + 1]
    artifact.write_folder(
        model_dir, best, model.calibration, model.schema, model.metadata
    )
