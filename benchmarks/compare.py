"""Run every benchmark and compare its results with the stored baselines.

  python -m benchmarks.compare run --out DIR [--quick]
      runs each ``benchmarks/<name>.py`` as ``python -m benchmarks.<name> --json
      DIR/<name>.json`` (``--quick`` is passed on when given)
  python -m benchmarks.compare check DIR [--baseline benchmarks/baseline]
      [--tolerance 0.5] [--markdown FILE] [--strict]
      prints, per benchmark, case and metric, current / baseline and whether that is
      worse than the tolerance allows

Which way is better is read from the metric's name: times, latencies, sizes and memory
are better lower (``seconds``, ``_s``, ``_ms``, ``latency``, ``bytes``, ``rss`` ...);
throughputs better higher (``per_s``, ``_ps``, ``throughput``, ``rps``, ``speedup``). A
baseline file may say it itself with ``"lower_is_better": [...]`` or
``"higher_is_better": [...]``. Metrics of unknown direction get a ratio and no verdict.
Exit codes: 0 compared (regressions are reported; ``--strict`` makes them exit 1),
2 a result file cannot be read, or a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__", "compare"}
_HIGHER = ("per_s", "_ps", "throughput", "rps", "qps", "speedup", "per_sec")
_LOWER_WORDS = ("seconds", "time", "latency", "bytes", "rss", "memory", "p50", "p99")
_LOWER_SUFFIXES = ("_s", "_ms", "_us", "_mb", "_gb")


class ResultError(Exception):
    """A result or baseline file is not in the benchmark JSON format."""


@dataclass(frozen=True)
class Row:
    benchmark: str
    case: str
    metric: str
    current: float
    baseline: float | None
    direction: str  # "lower", "higher" or "?"

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.current / self.baseline

    def regressed(self, tolerance: float) -> bool:
        ratio = self.ratio
        if ratio is None:
            return False
        if self.direction == "lower":
            return ratio > 1 + tolerance
        if self.direction == "higher":
            return ratio < 1 / (1 + tolerance)
        return False


def discover(directory: Path = BENCHMARKS_DIR) -> list[str]:
    """The benchmark modules present now (``benchmarks/<name>.py``)."""
    return sorted(
        p.stem
        for p in directory.glob("*.py")
        if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_")
    )


def direction(metric: str, document: dict) -> str:
    if metric in document.get("lower_is_better", []):
        return "lower"
    if metric in document.get("higher_is_better", []):
        return "higher"
    name = metric.lower()
    if any(part in name for part in _HIGHER):
        return "higher"
    if any(w in name for w in _LOWER_WORDS) or name.endswith(_LOWER_SUFFIXES):
        return "lower"
    return "?"


def load(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ResultError(f'{path}: expected {{"benchmark": ..., "results": [...]}}')
    for entry in document["results"]:
        if not isinstance(entry, dict) or "case" not in entry:
            raise ResultError(f"{path}: every result needs a 'case'")
    return document


def _metrics(entry: dict) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in entry.items()
        if key != "case"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def compare(current: dict, baseline: dict | None, name: str) -> list[Row]:
    """One row per (case, metric) of the current results."""
    reference = {
        str(e["case"]): _metrics(e) for e in (baseline or {}).get("results", [])
    }
    rows = []
    for entry in current["results"]:
        case = str(entry["case"])
        for metric, value in _metrics(entry).items():
            rows.append(
                Row(
                    benchmark=name,
                    case=case,
                    metric=metric,
                    current=value,
                    baseline=reference.get(case, {}).get(metric),
                    direction=direction(metric, baseline or current),
                )
            )
    return rows


def check(results_dir: Path, baseline_dir: Path) -> tuple[list[Row], list[str]]:
    """Rows for every result file, and the benchmarks that have no baseline."""
    rows: list[Row] = []
    missing = []
    for path in sorted(results_dir.glob("*.json")):
        current = load(path)
        name = str(current.get("benchmark") or path.stem)
        reference_path = baseline_dir / f"{name}.json"
        baseline = load(reference_path) if reference_path.exists() else None
        if baseline is None:
            missing.append(name)
        rows += compare(current, baseline, name)
    return rows, missing


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def render(rows: list[Row], missing: list[str], tolerance: float) -> str:
    """A markdown table (it reads as plain text too)."""
    lines = [
        "| benchmark | case | metric | baseline | current | current/baseline | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.ratio
        verdict = "REGRESSED" if row.regressed(tolerance) else ""
        if ratio is not None and not verdict and row.direction == "?":
            verdict = "(direction unknown)"
        lines.append(
            f"| {row.benchmark} | {row.case} | {row.metric} | {_fmt(row.baseline)} "
            f"| {_fmt(row.current)} | {_fmt(ratio)} | {verdict} |"
        )
    if not rows:
        lines = ["No benchmark results to compare."]
    for name in missing:
        lines.append(
            f"\nNo baseline for `{name}`: record one with "
            "`python -m benchmarks.compare run --out benchmarks/baseline`."
        )
    return "\n".join(lines) + "\n"


def run(out: Path, quick: bool, names: Sequence[str] | None = None) -> int:
    """Run each benchmark; returns how many failed."""
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names if names is not None else discover():
        command = [sys.executable, "-m", f"benchmarks.{name}", "--json"]
        command += [str(out / f"{name}.json")] + (["--quick"] if quick else [])
        print(f"$ {' '.join(command[1:])}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            print(f"error: benchmark {name} failed", file=sys.stderr)
            failed += 1
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run every benchmark")
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--quick", action="store_true")
    check_parser = commands.add_parser("check", help="compare results with baselines")
    check_parser.add_argument("results", type=Path)
    check_parser.add_argument(
        "--baseline", type=Path, default=BENCHMARKS_DIR / "baseline"
    )
    check_parser.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="how much worse than the baseline passes (0.5 = 50%%)",
    )
    check_parser.add_argument("--markdown", type=Path, help="also write the table")
    check_parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a metric regressed"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        if not discover():
            print("no benchmarks in benchmarks/")
        return 2 if run(args.out, args.quick) else 0
    if not args.results.is_dir():
        print(f"error: {args.results} is not a directory", file=sys.stderr)
        return 2
    try:
        rows, missing = check(args.results, args.baseline)
    except ResultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = render(rows, missing, args.tolerance)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    regressed = [r for r in rows if r.regressed(args.tolerance)]
    for row in regressed:
        print(
            f"regressed: {row.benchmark} {row.case} {row.metric} "
            f"{_fmt(row.baseline)} -> {_fmt(row.current)}",
            file=sys.stderr,
        )
    return 1 if regressed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
