"""The loop with and without compiled bytecode in the image (issue 22).

    .venv/bin/python -m benchmarks.bytecode                  # 100,000 customers, 1 pair
    .venv/bin/python -m benchmarks.bytecode --quick          # 3,000 customers
    .venv/bin/python -m benchmarks.bytecode --repeat 3 --json out.json

The image's Python reads compiled bytecode, or compiles every module it imports from
source at every process start: the python base images ship no ``.pyc`` files, and the
image sets ``PYTHONDONTWRITEBYTECODE``, so nothing compiled is ever kept. The
Dockerfile compiles the standard library and the venv at build time; this measures what
that saves on a job's start, end to end, with the local runner's hermetic jobs.

Two copies of this project run ``benchmarks.loop`` (the README's loop on a fresh,
seeded state folder), alternating:

- ``with bytecode``: the Dockerfile as it is;
- ``without``: the same Dockerfile whose final stage also sets ``PYTHONPYCACHEPREFIX``
  to a folder that does not exist, so every job and serving worker finds no bytecode
  and, with ``PYTHONDONTWRITEBYTECODE``, keeps none: the image as it was before the
  Dockerfile compiled it.

The runner itself (outside the image) is the same in both. Each figure is the median
over ``--repeat`` pairs; the ratio is without / with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.loop import DEFAULT_CUSTOMERS, QUICK_CUSTOMERS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("without", "with bytecode")
# Where the "without" image looks for bytecode: nowhere that holds any.
NO_BYTECODE = "/nonexistent/no-bytecode"


def copy_project(destination: Path, source: Path = PROJECT_ROOT) -> Path:
    """The project's files (tracked, and untracked but not ignored) under
    ``destination``: what a checkout of this working tree holds."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        relative = os.fsdecode(raw)
        origin = source / relative
        if not origin.is_file():  # listed but deleted in the working tree
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)
    return destination


def without_bytecode(dockerfile: Path) -> None:
    """Make ``dockerfile``'s image find no bytecode (its last stage's ENV)."""
    text = dockerfile.read_text()
    dockerfile.write_text(
        text.rstrip("\n")
        + "\n# benchmarks.bytecode: the image as it was, with no bytecode to read\n"
        + f"ENV PYTHONPYCACHEPREFIX={NO_BYTECODE}\n"
    )


def run_loop(project: Path, customers: int, results: Path) -> dict[str, float]:
    """``benchmarks.loop`` once in ``project``; each step's and the whole loop's
    seconds ("loop", "execution", "step:<name>").

    Raises:
        RuntimeError: the loop failed (its output's tail says why).
    """
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loop"]
        + ["--customers", str(customers), "--json", str(results)],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"benchmarks.loop exited {done.returncode} in {project}:\n{tail}"
        )
    return figures(json.loads(results.read_text()))


def figures(document: dict[str, Any]) -> dict[str, float]:
    """The seconds of a ``benchmarks.loop --json`` document, by case."""
    found: dict[str, float] = {}
    for result in document["results"]:
        if result["case"] == "loop":
            found["loop"] = float(result["seconds"])
            found["execution"] = float(result["execution_seconds"])
        else:
            found[result["case"]] = float(result["seconds"])
    return found


def compare(runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per case (in the first run's order): each variant's median, the seconds the
    bytecode saves and the ratio without / with."""
    without, with_ = runs[VARIANTS[0]], runs[VARIANTS[1]]
    rows = []
    for case in without[0]:
        if not all(case in run for run in (*without, *with_)):
            continue
        slow = statistics.median(run[case] for run in without)
        fast = statistics.median(run[case] for run in with_)
        rows.append(
            {
                "case": case,
                "without_seconds": round(slow, 3),
                "with_seconds": round(fast, 3),
                "saved_seconds": round(slow - fast, 3),
                "ratio": round(slow / fast, 2) if fast else None,
            }
        )
    return rows


def render(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'case':22} {'without':>9} {'with':>9} {'saved':>8} {'without/with':>13}"
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        lines.append(
            f"{row['case'].removeprefix('step:'):22} {row['without_seconds']:>9.2f} "
            f"{row['with_seconds']:>9.2f} {row['saved_seconds']:>8.2f} {ratio:>13}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bytecode")
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help=f"demo customers (default {DEFAULT_CUSTOMERS:,}; "
        f"--quick {QUICK_CUSTOMERS:,})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data")
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of runs (the table shows medians)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results")
    args = parser.parse_args(argv)
    if args.customers is None:
        args.customers = QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS
    if args.customers < 1 or args.repeat < 1:
        print("error: --customers and --repeat must be positive", file=sys.stderr)
        return 2
    print(f"load average at start: {_load()}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-bytecode-") as folder:
        projects = {
            variant: copy_project(Path(folder) / variant.replace(" ", "-"))
            for variant in VARIANTS
        }
        without_bytecode(projects[VARIANTS[0]] / "Dockerfile")
        try:
            for number in range(1, args.repeat + 1):
                for variant in VARIANTS:
                    result = projects[variant].with_name(
                        f"{projects[variant].name}-{number}.json"
                    )
                    seconds = run_loop(projects[variant], args.customers, result)
                    runs[variant].append(seconds)
                    print(
                        f"pair {number}, {variant}: whole loop {seconds['loop']:.2f} s "
                        f"(load {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    rows = compare(runs)
    print()
    if args.repeat > 1:
        print(f"medians of {args.repeat} pairs, {args.customers:,} customers")
    for line in render(rows):
        print(line)
    print(f"\nload average at end: {_load()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "bytecode",
            "higher_is_better": ["saved_seconds", "ratio"],
            "customers": args.customers,
            "results": rows,
            "runs": runs,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


if __name__ == "__main__":
    sys.exit(main())
