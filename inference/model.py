"""Load a model artifact's folder (``inference.artifact``) once and score feature
matrices.

``LoadedModel.predict`` is the one way every scorer (the endpoint, Evaluate, the
Gate's champion, the Baseline, the benchmarks) turns features into SCORE: the
booster's output (``inference.scorer``: Treelite's GTIL for small batches, XGBoost
for the rest, bit for bit alike) through the calibration saved with it
(``inference.calibration``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features import FeatureSchema
from inference import artifact
from inference.calibration import Calibration, CalibrationError
from inference.scorer import SMALL_BATCH_ROWS, TreeScorer

if TYPE_CHECKING:  # imported where a model loads, not on import
    import xgboost as xgb

log = logging.getLogger("inference.model")


class ModelLoadError(Exception):
    pass


def import_xgboost_without_scikit_learn() -> None:
    """Import XGBoost without the scikit-learn (and SciPy) it imports on import.

    XGBoost imports scikit-learn only to offer its scikit-learn estimators, which
    loading and scoring a booster never use: about 1.2 s of a process's start (1.5 s
    to import XGBoost, 0.3 s without). Serving workers and the local endpoint's check
    that a model loads pay it on every (re)deploy. With scikit-learn hidden while
    XGBoost imports, XGBoost takes its no-scikit-learn path (its own fallback); the
    booster and its predictions are the same. A process that has imported either
    already keeps what it has.
    """
    if "xgboost" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # import fails: absent
    try:
        import xgboost  # noqa: F401
    finally:
        del sys.modules["sklearn"]


@dataclass
class LoadedModel:
    booster: xgb.Booster
    schema: FeatureSchema
    metadata: dict[str, Any]
    calibration: Calibration
    small_batch_rows: int = SMALL_BATCH_ROWS

    def __post_init__(self) -> None:
        self.scorer = TreeScorer(self.booster, self.small_batch_rows)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities (SCORE) for a float matrix in schema order
        (NaN = missing).
        """
        return self.calibration.apply(self.predict_raw(matrix))

    def predict_raw(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's own scores, before calibration (for the evaluation's
        before/after comparison; never served). Small batches and large ones take
        different evaluators with bit-identical results (``inference.scorer``).
        """
        if matrix.ndim != 2 or matrix.shape[1] != len(self.schema.features):
            raise ValueError(
                f"expected {len(self.schema.features)} features per row, "
                f"got shape {matrix.shape}"
            )
        return self.scorer.predict(matrix)


def load_model(
    model_dir: Path, threads: int = 1, small_batch_rows: int = SMALL_BATCH_ROWS
) -> LoadedModel:
    """Read ``model.json``, ``calibration.json``, ``schema.json`` and
    ``metadata.json`` from ``model_dir``.

    Batches of at most ``small_batch_rows`` rows are scored by the fast path of
    ``inference.scorer`` (0: XGBoost for every batch).

    A model saved before calibration existed has no ``calibration.json``: it loads
    with the identity (its raw scores are served, as before) and a warning says so.
    """
    import xgboost as xgb

    try:
        booster = xgb.Booster()
        booster.load_model(model_dir / artifact.MODEL_FILE)
        schema = FeatureSchema.from_dict(
            json.loads((model_dir / artifact.SCHEMA_FILE).read_text())
        )
        metadata_path = model_dir / artifact.METADATA_FILE
        metadata = (
            json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
        )
        calibration = _load_calibration(model_dir / artifact.CALIBRATION_FILE)
    except (OSError, ValueError, xgb.core.XGBoostError) as exc:
        raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
    booster.set_param({"nthread": threads})
    return LoadedModel(booster, schema, metadata, calibration, small_batch_rows)


def _load_calibration(path: Path) -> Calibration:
    if not path.exists():
        log.warning(
            "%s has no %s: scores are the booster's raw outputs (identity "
            "calibration), not calibrated probabilities; retrain to calibrate",
            path.parent,
            path.name,
        )
        return Calibration.identity()
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except CalibrationError as exc:
        raise ValueError(f"{path.name}: {exc}") from exc
