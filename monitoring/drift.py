"""Compare a batch of recent data with the training baseline.

Per feature: distribution drift (PSI over the baseline's deciles, and a two-sample
Kolmogorov-Smirnov test against the baseline's quantile sketch), missing values
(completeness below the baseline's), type violations (values that are not numbers,
or not whole numbers for an integral feature) and range violations (values outside the
baseline's [min, max], or negative where the baseline never was). For the scores:
prediction drift, by the same PSI. Each finding is a violation in Model Monitor's
``constraint_violations.json`` format; thresholds come from ``monitoring`` in the
configuration.

A KS test over tens of thousands of rows finds any shift "significant", so a feature
counts as drifted by KS only when the statistic itself passes its threshold too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring.baseline import PREDICTION, Baseline, dataset_statistics
from stack.config import MonitoringConfig

_FLOOR = 1e-4  # a bin's share in PSI, so that an empty bin does not make it infinite


class InsufficientData(ValueError):
    """Too few rows to judge drift."""


@dataclass
class FeatureDrift:
    name: str
    rows: int
    psi: float | None
    ks_statistic: float | None
    ks_p_value: float | None
    missing_fraction: float
    baseline_missing_fraction: float
    out_of_range_fraction: float
    type_mismatch_fraction: float
    drifted: bool


@dataclass
class DriftResult:
    rows: int
    features: list[FeatureDrift]
    prediction: dict[str, Any] | None
    violations: list[dict[str, str]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": [asdict(f) for f in self.features],
            "prediction": self.prediction,
            "violations": len(self.violations),
        }


def sketch_cdf(feature: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted items of a statistics entry's quantile sketch and their cumulative
    share (an item at level ``h`` weighs ``2**h``).
    """
    levels = feature["numerical_statistics"]["distribution"]["kll"]["sketch"]["data"]
    empty = [np.empty(0)]
    items = np.concatenate([np.asarray(level, float) for level in levels] or empty)
    weights = np.concatenate(
        [np.full(len(level), 2.0**h) for h, level in enumerate(levels)] or empty
    )
    # compared at float32: the endpoint and its clients carry features as float32,
    # and a value such as 1/3 must fall on the same side of a bin edge either way
    items = items.astype(np.float32).astype(float)
    order = np.argsort(items, kind="stable")
    items, weights = items[order], weights[order]
    total = weights.sum()
    return items, (np.cumsum(weights) / total if total else weights)


def _cdf_at(items: np.ndarray, cumulative: np.ndarray, x: np.ndarray) -> np.ndarray:
    index = np.searchsorted(items, x, side="right")
    return np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0)


def psi(items: np.ndarray, cumulative: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of ``current`` (sorted) against the baseline
    sketch, over the baseline's deciles (fewer bins where values repeat).
    """
    ranks = np.searchsorted(cumulative, np.linspace(0.1, 0.9, 9), side="left")
    edges = np.unique(items[np.minimum(ranks, items.size - 1)])
    base = np.diff(np.concatenate([[0.0], _cdf_at(items, cumulative, edges), [1.0]]))
    counts = np.searchsorted(current, edges, side="right")
    now = np.diff(np.concatenate([[0], counts, [current.size]])) / current.size
    base, now = np.maximum(base, _FLOOR), np.maximum(now, _FLOOR)
    return float(np.sum((now - base) * np.log(now / base)))


def ks_test(
    items: np.ndarray, cumulative: np.ndarray, baseline_rows: int, current: np.ndarray
) -> tuple[float, float]:
    """Two-sample KS statistic between the baseline sketch's CDF and ``current``
    (sorted), and its asymptotic p-value.
    """
    from scipy.stats import kstwobign

    points = np.unique(np.concatenate([items, current]))
    base = _cdf_at(items, cumulative, points)
    now = np.searchsorted(current, points, side="right") / current.size
    statistic = float(np.max(np.abs(base - now)))
    n, m = baseline_rows, current.size
    effective = math.sqrt(n * m / (n + m))
    return statistic, float(kstwobign.sf(statistic * effective))


def _violation(feature: str, check: str, description: str) -> dict[str, str]:
    return {
        "feature_name": feature,
        "constraint_check_type": check,
        "description": description,
    }


def compare(
    frame: pd.DataFrame,
    baseline: Baseline,
    settings: MonitoringConfig,
    ignore: frozenset[str] = frozenset(),
) -> DriftResult:
    """Judge ``frame`` (one row per scored record; feature columns, optionally
    ``prediction``) against ``baseline``.

    Raises:
        InsufficientData: fewer rows than ``settings.min_rows``.
    """
    rows = len(frame)
    if rows < settings.min_rows:
        raise InsufficientData(
            f"{rows} rows to check; at least {settings.min_rows} are needed "
            "(monitoring.min_rows)"
        )
    violations: list[dict[str, str]] = []
    results: list[FeatureDrift] = []
    known = {f["name"] for f in baseline.statistics["features"]}
    for extra in sorted(set(frame.columns) - known - {PREDICTION} - ignore):
        violations.append(
            _violation(
                extra, "extra_column_check", f"column {extra!r} is not in the baseline"
            )
        )
    checked: list[tuple[str, str]] = []
    for feature in baseline.statistics["features"]:
        name = feature["name"]
        if name not in frame.columns:
            violations.append(
                _violation(name, "missing_column_check", f"column {name!r} is missing")
            )
            continue
        result, found = _judge_feature(frame[name], feature, baseline, settings)
        results.append(result)
        violations.extend(found)
        checked.append((name, feature["inferred_type"]))
    prediction = None
    if PREDICTION in frame.columns and baseline.prediction is not None:
        prediction, found = _judge_prediction(frame[PREDICTION], baseline, settings)
        violations.extend(found)
        checked.append((PREDICTION, "Fractional"))
    return DriftResult(
        rows=rows,
        features=results,
        prediction=prediction,
        violations=violations,
        statistics=dataset_statistics(frame, checked),
    )


def _judge_feature(
    column: pd.Series,
    feature: dict[str, Any],
    baseline: Baseline,
    settings: MonitoringConfig,
) -> tuple[FeatureDrift, list[dict[str, str]]]:
    name = feature["name"]
    numbers = feature["numerical_statistics"]
    common = numbers["common"]
    baseline_rows = common["num_present"] + common["num_missing"]
    values = pd.to_numeric(column, errors="coerce").to_numpy(float)
    values = values.astype(np.float32).astype(float)  # see sketch_cdf
    given = column.notna().to_numpy()
    not_numbers = given & np.isnan(values)
    present = values[~np.isnan(values)]
    mismatched = int(not_numbers.sum())
    if feature["inferred_type"] == "Integral":
        mismatched += int(np.count_nonzero(present != np.round(present)))
    found: list[dict[str, str]] = []
    rows = column.size
    type_share = mismatched / max(int(given.sum()), 1)
    if type_share > settings.type_mismatch_tolerance:
        kind = "whole numbers" if feature["inferred_type"] == "Integral" else "numbers"
        found.append(
            _violation(
                name,
                "data_type_check",
                f"{mismatched} of {int(given.sum())} values ({type_share:.2%}) are not "
                f"{kind} (baseline type {feature['inferred_type']})",
            )
        )
    missing = 1.0 - present.size / rows
    baseline_missing = common["num_missing"] / baseline_rows if baseline_rows else 0.0
    constraint = baseline.constraint(name) or {}
    required = constraint.get("completeness", 1.0 - baseline_missing)
    if 1.0 - missing < required - settings.completeness_tolerance:
        found.append(
            _violation(
                name,
                "completeness_check",
                f"{1 - missing:.2%} of values present; the baseline's completeness "
                f"is {required:.2%} (tolerance {settings.completeness_tolerance:.2%})",
            )
        )
    low, high = (float(np.float32(numbers[k])) for k in ("min", "max"))
    outside = int(np.count_nonzero((present < low) | (present > high)))
    out_share = outside / max(present.size, 1)
    if out_share > settings.out_of_range_tolerance:
        found.append(
            _violation(
                name,
                "range_check",
                f"{outside} values ({out_share:.2%}) outside the baseline's range "
                f"[{low:g}, {high:g}] "
                f"(tolerance {settings.out_of_range_tolerance:.2%})",
            )
        )
    non_negative = constraint.get("num_constraints", {}).get("is_non_negative")
    negative = int(np.count_nonzero(present < 0))
    if (
        non_negative
        and negative
        and negative / max(present.size, 1) > (settings.out_of_range_tolerance)
    ):
        found.append(
            _violation(
                name,
                "range_check",
                f"{negative} negative values; the baseline has none",
            )
        )
    psi_value = ks_statistic = ks_p = None
    drifted = False
    items, cumulative = sketch_cdf(feature)
    if present.size and items.size:
        current = np.sort(present)
        psi_value = psi(items, cumulative, current)
        ks_statistic, ks_p = ks_test(
            items, cumulative, max(common["num_present"], 1), current
        )
        by_psi = psi_value > settings.psi_threshold
        by_ks = (
            ks_statistic > settings.ks_statistic_threshold
            and ks_p < settings.ks_p_value
        )
        drifted = by_psi or by_ks
        if drifted:
            found.append(
                _violation(
                    name,
                    "baseline_drift_check",
                    f"distribution drift: PSI {psi_value:.3f} "
                    f"(threshold {settings.psi_threshold}), KS {ks_statistic:.3f} "
                    f"(threshold {settings.ks_statistic_threshold}, "
                    f"p={ks_p:.2g})",
                )
            )
    return (
        FeatureDrift(
            name=name,
            rows=rows,
            psi=psi_value,
            ks_statistic=ks_statistic,
            ks_p_value=ks_p,
            missing_fraction=round(missing, 6),
            baseline_missing_fraction=round(baseline_missing, 6),
            out_of_range_fraction=round(out_share, 6),
            type_mismatch_fraction=round(type_share, 6),
            drifted=drifted,
        ),
        found,
    )


def _judge_prediction(
    column: pd.Series, baseline: Baseline, settings: MonitoringConfig
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    assert baseline.prediction is not None
    feature = baseline.prediction["features"][0]
    scores = pd.to_numeric(column, errors="coerce").dropna().to_numpy(np.float32)
    scores = np.sort(scores.astype(float))
    items, cumulative = sketch_cdf(feature)
    value = psi(items, cumulative, scores) if scores.size else None
    summary = {
        "psi": value,
        "mean": float(scores.mean()) if scores.size else None,
        "baseline_mean": feature["numerical_statistics"]["mean"],
        "rows": int(scores.size),
    }
    found = []
    if value is not None and value > settings.prediction_psi_threshold:
        found.append(
            _violation(
                PREDICTION,
                "baseline_drift_check",
                f"prediction drift: PSI {value:.3f} "
                f"(threshold {settings.prediction_psi_threshold}); mean score "
                f"{summary['mean']:.3f} against {summary['baseline_mean']:.3f}",
            )
        )
    return summary, found
