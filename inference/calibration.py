"""The calibration that makes a model's score a churn probability.

Training weights the classes (``scale_pos_weight``), so the booster's outputs rank
customers well but overstate churn (mean 0.38 against a 0.11 churn rate on the demo
data). The Train step fits Platt scaling on the validation split
(``training.calibration``) and saves it beside the booster as ``calibration.json``;
``inference.model.LoadedModel.predict`` applies it, so the endpoint, the evaluation,
the baseline and every write-back serve the same calibrated probability.

Platt scaling on the booster's log-odds, ``p = sigmoid(slope * logit(s) + intercept)``
with ``slope > 0``, is strictly increasing: rankings, and so AUC, do not change.
Two numbers in JSON, applied with numpy: the serving image unpickles nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PLATT = "platt"
IDENTITY = "identity"


class CalibrationError(ValueError):
    """A calibration that cannot be fitted, or a ``calibration.json`` we cannot use."""


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the booster's score to a probability.

    ``identity`` stands for a model saved before calibration existed: its scores are
    served as they are.
    """

    method: str
    slope: float = 1.0
    intercept: float = 0.0
    fitted_on: str = ""
    rows: int = 0
    positives: int = 0

    @classmethod
    def identity(cls) -> Calibration:
        return cls(IDENTITY)

    @property
    def is_identity(self) -> bool:
        return self.method == IDENTITY

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for the booster's ``scores`` (float64).

        A score of exactly 0 or 1 has an infinite logit and stays 0 or 1; no clipping,
        which would tie distinct scores.
        """
        if self.is_identity:
            return np.asarray(scores, dtype=np.float64)
        s = np.asarray(scores, dtype=np.float64)
        with np.errstate(divide="ignore", over="ignore"):
            logit = np.log(s) - np.log1p(-s)
            return 1.0 / (1.0 + np.exp(-(self.slope * logit + self.intercept)))

    def describe(self) -> str:
        """What the score is, in one sentence (metadata, reports, logs)."""
        if self.is_identity:
            return (
                "the booster's raw score: the artifact holds no calibration, so it is "
                "not a probability when training weighted the classes"
            )
        return (
            f"calibrated churn probability: Platt scaling of the booster's log-odds "
            f"(slope {self.slope:.4f}, intercept {self.intercept:.4f}), fitted on the "
            f"{self.fitted_on} split ({self.rows:,} rows, {self.positives:,} churned)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Read ``calibration.json``; refuse what would not be a strictly increasing
        map (serving it would silently change every score).
        """
        if not isinstance(data, Mapping):
            raise CalibrationError("expected a JSON object")
        method = data.get("method")
        if method == IDENTITY:
            return cls.identity()
        if method != PLATT:
            raise CalibrationError(
                f"unknown calibration method {method!r} (this server knows {PLATT!r})"
            )
        try:
            slope, intercept = float(data["slope"]), float(data["intercept"])
            rows, positives = int(data.get("rows", 0)), int(data.get("positives", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"Platt calibration without a usable {exc}"
            ) from None
        if not (math.isfinite(slope) and math.isfinite(intercept) and slope > 0):
            raise CalibrationError(
                f"Platt calibration must have a finite slope > 0 and a finite "
                f"intercept, got slope {slope} and intercept {intercept}"
            )
        return cls(
            PLATT, slope, intercept, str(data.get("fitted_on", "")), rows, positives
        )
