"""Fit the calibration that ``inference.calibration`` applies.

Platt scaling rather than isotonic regression, measured on the demo data (100,000
customers, the test split's 7,700 rows, ECE over score deciles):

    booster as trained   AUC 0.81041  ECE 0.272
    Platt on log-odds    AUC 0.81041  ECE 0.010
    isotonic             AUC 0.81003  ECE 0.011

and with 20,000 customers isotonic cost 0.011 of AUC (its steps tie distinct scores)
where Platt, being strictly increasing, keeps every ranking. Two coefficients also
travel as JSON, where isotonic needs its thresholds.
"""

from __future__ import annotations

import logging

import numpy as np

from inference.calibration import PLATT, Calibration, CalibrationError

log = logging.getLogger("training.calibration")

# Logits beyond this only arise from scores of exactly 0 or 1 (float32 saturates
# near +-17): kept finite for the fit; ``Calibration.apply`` maps them to 0 and 1.
_LOGIT_BOUND = 50.0


def fit_platt(
    scores: np.ndarray, labels: np.ndarray, split: str = "validation"
) -> Calibration:
    """Platt scaling of the booster's ``scores`` to ``labels`` (0/1) by unpenalised
    logistic regression on the scores' log-odds.

    Where the scores rank ``split`` no better than chance the fitted slope is not
    positive, and such a map would reverse or flatten the ranking: then only the
    intercept is fitted (slope 1), which still makes the mean score the churn rate.
    Such a model fails the gate's AUC rule on its own ranking.

    Raises:
        CalibrationError: one class only, or scores and labels of different lengths.
    """
    from sklearn.linear_model import LogisticRegression

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    positives = int(y.sum())
    if len(s) != len(y):
        raise CalibrationError(f"{len(s)} scores for {len(y)} labels")
    if positives in (0, len(y)):
        raise CalibrationError(
            f"the {split} split has only one class; cannot calibrate"
        )
    with np.errstate(divide="ignore"):
        logit = np.clip(np.log(s) - np.log1p(-s), -_LOGIT_BOUND, _LOGIT_BOUND)
    fit = LogisticRegression(C=np.inf).fit(logit[:, np.newaxis], y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not slope > 0:
        log.warning(
            "the calibration fitted on the %s split is not increasing (slope %.4g): "
            "the model ranks those rows no better than chance; fitting the "
            "intercept alone",
            split,
            slope,
        )
        slope, intercept = 1.0, _intercept_alone(logit, positives / len(y))
    return Calibration(PLATT, slope, intercept, split, len(y), positives)


def _intercept_alone(logit: np.ndarray, rate: float) -> float:
    """The shift of the log-odds that makes the mean probability ``rate``."""
    from scipy.optimize import brentq

    def excess(shift: float) -> float:
        return float(np.mean(1 / (1 + np.exp(-(logit + shift)))) - rate)

    bound = 2 * _LOGIT_BOUND + 20  # excess < 0 at -bound, > 0 at +bound
    return float(brentq(excess, -bound, bound))
