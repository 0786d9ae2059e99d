"""How fast the CLI answers: ``--help`` and ``--definition``, next to importing the SDK.

  .venv/bin/python -m benchmarks.cli [--repeat N] [--quick] [--json PATH]

Each command runs as a fresh process (what a CD runner or a person pays), ``--repeat``
times; the table shows the median and best wall time and the ratio to
``python -c "import sagemaker.mlops"``, the SDK import that the CLI avoids for
``--help`` and pays once for ``--definition``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stack.registry import LOCAL_ACCOUNT

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cases(scratch: Path) -> list[tuple[str, list[str]]]:
    python = sys.executable
    return [
        ("python -c pass (interpreter floor)", [python, "-c", "pass"]),
        (
            'python -c "import sagemaker.mlops"',
            [python, "-c", "import sagemaker.mlops"],
        ),
        ("python -m pipelines.run --help", [python, "-m", "pipelines.run", "--help"]),
        (
            "python -m pipelines.run --definition FILE",
            [python, "-m", "pipelines.run", "--definition", str(scratch / "d.json")],
        ),
        (
            "python -m pipelines.run --env dev --definition FILE",
            [
                python,
                "-m",
                "pipelines.run",
                "--env",
                "dev",
                "--role-arn",
                f"arn:aws:iam::{LOCAL_ACCOUNT}:role/bench",
                "--definition",
                str(scratch / "dev.json"),
            ],
        ),
    ]


def measure(argv: list[str], repeat: int) -> list[float]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--only", metavar="TEXT", help="only the commands containing TEXT (and the SDK)"
    )
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in cases(Path(scratch)):
            if args.only and args.only not in name and "import sagemaker" not in name:
                continue
            times = measure(command, repeat)
            results.append(
                {
                    "case": name,
                    "median_s": statistics.median(times),
                    "best_s": min(times),
                }
            )
    baseline = next(r for r in results if "import sagemaker.mlops" in r["case"])
    print(f"{'command':<55}{'median':>9}{'best':>9}{'vs SDK import':>15}")
    for r in results:
        r["ratio_to_sdk_import"] = r["median_s"] / baseline["median_s"]
        print(
            f"{r['case']:<55}{r['median_s']:>8.2f}s{r['best_s']:>8.2f}s"
            f"{r['ratio_to_sdk_import']:>14.2f}x"
        )
    print(f"({repeat} run(s) each, fresh processes, {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"benchmark": "cli", "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
