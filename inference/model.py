"""Load a trained model folder (or ``model.tar.gz``) once and score feature matrices."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from features import FeatureSchema


class ModelLoadError(Exception):
    pass


@dataclass
class LoadedModel:
    booster: xgb.Booster
    schema: FeatureSchema
    metadata: dict[str, Any]

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Churn probabilities for a float matrix in schema order (NaN = missing)."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.schema.features):
            raise ValueError(
                f"expected {len(self.schema.features)} features per row, "
                f"got shape {matrix.shape}"
            )
        return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64)


def load_model(model_dir: Path, threads: int = 1) -> LoadedModel:
    """Read ``model.json``, ``schema.json`` and ``metadata.json`` from ``model_dir``."""
    try:
        booster = xgb.Booster()
        booster.load_model(model_dir / "model.json")
        schema = FeatureSchema.from_dict(
            json.loads((model_dir / "schema.json").read_text())
        )
        metadata_path = model_dir / "metadata.json"
        metadata = (
            json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
        )
    except (OSError, ValueError, xgb.core.XGBoostError) as exc:
        raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
    booster.set_param({"nthread": threads})
    return LoadedModel(booster, schema, metadata)


def unpack_model(archive: Path, target: Path) -> Path:
    """Extract a SageMaker ``model.tar.gz`` into ``target`` (refusing unsafe
    members).
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
