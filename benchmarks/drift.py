"""The drift check's cost against the check a user would otherwise write by hand.

  .venv/bin/python -m benchmarks.drift [--quick] [--json PATH]

Both judge a batch of recent rows against the training data, feature by feature:
  - ours: ``monitoring.drift.compare`` against the training baseline
    (``statistics.json``: ten buckets and a 1,024-item quantile sketch per feature);
  - by hand: ``scipy.stats.ks_2samp`` and a decile PSI (``numpy.quantile`` +
    ``numpy.histogram``) against the full training columns, which must be kept and
    read at every check.
The table gives each one's seconds, the ratio, the size of what each keeps between
checks (the baseline JSON against the training columns as Parquet), and how far our KS
statistics and PSI are from the exact ones (the sketch's approximation).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.schema import load_feature_set
from monitoring.baseline import build_baseline
from monitoring.drift import compare
from stack.config import MonitoringConfig


def synthetic(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Columns shaped like the churn features: counts, amounts, shares, with gaps."""
    rng = np.random.default_rng(seed)
    schema = load_feature_set("churn").schema
    columns: dict[str, np.ndarray] = {}
    for i, feature in enumerate(schema.features):
        if feature.dtype == "int":
            values = rng.poisson(3 + i + shift * 2, rows).astype(float)
        else:
            values = rng.gamma(2.0 + i % 4, 10.0 * (1 + shift), rows)
        if feature.nullable:
            values[rng.random(rows) < 0.05] = np.nan
        columns[feature.name] = values
    columns["prediction"] = rng.beta(2, 5 - 2 * shift, rows)
    return pd.DataFrame(columns)


def by_hand(
    train: pd.DataFrame, current: pd.DataFrame
) -> dict[str, tuple[float, float]]:
    from scipy.stats import ks_2samp

    out = {}
    for name in train.columns:
        a = train[name].dropna().to_numpy()
        b = current[name].dropna().to_numpy()
        statistic = float(ks_2samp(a, b).statistic)
        edges = np.unique(np.quantile(a, np.linspace(0.1, 0.9, 9)))
        edges = np.concatenate([[-np.inf], edges, [np.inf]])
        base = np.maximum(np.histogram(a, edges)[0] / a.size, 1e-4)
        now = np.maximum(np.histogram(b, edges)[0] / b.size, 1e-4)
        out[name] = (statistic, float(np.sum((now - base) * np.log(now / base))))
    return out


def run(train_rows: int, current_rows: int, repeat: int) -> list[dict[str, Any]]:
    schema = load_feature_set("churn").schema
    train = synthetic(train_rows, seed=1)
    current = synthetic(current_rows, seed=2, shift=0.1)
    started = time.perf_counter()
    baseline = build_baseline(train, schema, train["prediction"].to_numpy())
    baseline_seconds = time.perf_counter() - started
    settings = MonitoringConfig()
    compare(current.head(1000), baseline, settings)  # imports (scipy) out of the timing

    ours_times, hand_times = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        result = compare(current, baseline, settings)
        ours_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        exact = by_hand(train, current)
        hand_times.append(time.perf_counter() - started)
    # every synthetic column has values, so each feature has both statistics
    ours = {f.name: (float(f.ks_statistic), float(f.psi)) for f in result.features}  # type: ignore[arg-type]
    ks_error = max(abs(ours[n][0] - exact[n][0]) for n in ours)
    psi_error = max(abs(ours[n][1] - exact[n][1]) for n in ours)
    baseline_bytes = sum(
        len(json.dumps(d))
        for d in (baseline.statistics, baseline.constraints, baseline.prediction)
    )
    parquet = io.BytesIO()
    train.to_parquet(parquet)
    return [
        {
            "case": "ours (sketch baseline)",
            "seconds": min(ours_times),
            "rows": current_rows,
            "kept_bytes": baseline_bytes,
            "baseline_build_seconds": round(baseline_seconds, 3),
            "max_ks_error": round(ks_error, 4),
            "max_psi_error": round(psi_error, 4),
        },
        {
            "case": "by hand (ks_2samp on training data)",
            "seconds": min(hand_times),
            "rows": current_rows,
            "kept_bytes": parquet.getbuffer().nbytes,
        },
    ]


def _report(results: list[dict[str, Any]], train_rows: int) -> str:
    ours, hand = results
    lines = [
        f"{len(load_feature_set('churn').schema.features)} features + prediction; "
        f"{train_rows:,} training rows, {ours['rows']:,} rows checked",
        f"{'case':<38}{'seconds':>9}{'kept bytes':>14}",
    ]
    for r in results:
        lines.append(f"{r['case']:<38}{r['seconds']:>9.3f}{r['kept_bytes']:>14,}")
    lines.append(
        f"ratios: by hand / ours = {hand['seconds'] / ours['seconds']:.1f}x time, "
        f"{hand['kept_bytes'] / ours['kept_bytes']:.0f}x bytes kept; baseline built "
        f"once in {ours['baseline_build_seconds']:.2f} s"
    )
    lines.append(
        f"sketch error against the exact statistics: KS at most "
        f"{ours['max_ks_error']:.4f}, PSI at most {ours['max_psi_error']:.4f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.drift")
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    train_rows, current_rows, repeat = (
        (20_000, 5_000, 1) if args.quick else (1_000_000, 100_000, 3)
    )
    results = run(train_rows, current_rows, repeat)
    print(_report(results, train_rows))
    if args.json:
        args.json.write_text(
            json.dumps({"benchmark": "drift", "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
