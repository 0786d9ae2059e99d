"""Inner-loop benchmark (issue 22): the README's loop, step by step, against a baseline.

    .venv/bin/python -m benchmarks.loop                 # 100,000 demo customers
    .venv/bin/python -m benchmarks.loop --quick         # 3,000 customers
    .venv/bin/python -m benchmarks.loop --json out.json --state-dir /tmp/loop-x

It seeds a fresh state folder (not timed), then runs the README's command once,
``python -m pipelines.run`` with that folder, its customers and a free endpoint port:
no step cache, the image staged from the Dockerfile as a first run after a change of
code stages it. It stops the endpoint the run left.

Each step's wall time (the runner's ``duration_seconds`` in the execution record) is
split, for the steps that run a job, into

- ``runner``: what the local runner does around the job's process: staging the
  image (the first job of a run: Preflight), the inputs, the outputs, the sandbox;
- ``start-up``: from the process's start (``times.json``, which the job launcher,
  ``pipelines.local_jobs``, writes beside each job's log) to the job's first query or
  read: the ``first read: ...`` line each processing entry point logs with its time
  (``processing.contract.log_first_read``). An entry point that logs no such line
  (Train, WriteBack) gets its first timestamped log line instead, marked ``~``, or
  nothing when its log has no timestamps;
- ``work``: from there to the process's exit.

The whole loop is the command's wall time; the execution's own span (first step's
start to the last step's end) is printed beside it, with the
load average at the start and the end (the cores are shared), and the ratio of each
figure to the stored baseline (``benchmarks/baseline/loop.json``: the loop as it was
before issue 22).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.extract import free_port

DEFAULT_CUSTOMERS = 100_000
QUICK_CUSTOMERS = 3_000
BASELINE = Path(__file__).resolve().parent / "baseline" / "loop.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
GOAL_LOOP_SECONDS = 20.0
GOAL_STARTUP_SECONDS = 1.0
_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_FIRST_READ = re.compile(_STAMP + r" \S+ first read: ")
_ANY_STAMP = re.compile(_STAMP + " ")


@dataclass(frozen=True)
class StepTimes:
    """One step of the execution, split as the module's docstring says."""

    name: str
    kind: str
    seconds: float
    runner: float | None = None
    startup: float | None = None
    startup_exact: bool = True  # False: to the first log line, not a first read
    work: float | None = None

    def result(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"case": f"step:{self.name}", "seconds": self.seconds}
        for key, value in (
            ("runner_seconds", self.runner),
            ("startup_seconds", self.startup),
            ("work_seconds", self.work),
        ):
            if value is not None:
                entry[key] = round(value, 3)
        if self.startup is not None and not self.startup_exact:
            entry["startup_to"] = "first log line"
        return entry


def seed(state_dir: Path, customers: int) -> float:
    """Seed the demo data into ``state_dir``'s embedded Snowflake; its seconds."""
    from datagen.seed import ensure_demo_data
    from stack.config import load_config
    from stack.resources import build_resources

    config = load_config(
        "local", {"state_dir": str(state_dir), "demo.customers": customers}
    )
    started = time.monotonic()
    ensure_demo_data(
        build_resources(config).warehouse, config.demo.customers, config.demo.seed
    )
    return time.monotonic() - started


def run_loop(state_dir: Path, customers: int, port: int) -> tuple[float, str]:
    """The README's command on ``state_dir``: its wall time and its output.

    Raises:
        RuntimeError: the loop did not succeed (its output's tail says why).
    """
    command = [
        sys.executable,
        "-m",
        "pipelines.run",
        "--state-dir",
        str(state_dir),
        "--customers",
        str(customers),
        "--port",
        str(port),
    ]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise RuntimeError(f"the loop exited {done.returncode}:\n{tail}")
    return seconds, output


def stop_endpoint(state_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pipelines.endpoint", "stop"]
        + ["--state-dir", str(state_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def latest_execution(state_dir: Path) -> dict[str, Any]:
    records = sorted(
        (state_dir / "executions").glob("*/execution.json"),
        key=lambda p: p.stat().st_mtime,
    )
    if not records:
        raise RuntimeError(f"no execution record under {state_dir / 'executions'}")
    return dict(json.loads(records[-1].read_text()))


def _log_time(text: str) -> float:
    """A log line's ``asctime`` (local time, milliseconds) as Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_read(log: Path) -> tuple[float | None, bool]:
    """When the job's log says it first read (exact), else its first timestamped
    line (not exact), else None.
    """
    if not log.is_file():
        return None, True
    first_stamp = None
    for line in log.read_text(errors="replace").splitlines():
        match = _FIRST_READ.match(line)
        if match:
            return _log_time(match[1]), True
        if first_stamp is None and (stamp := _ANY_STAMP.match(line)):
            first_stamp = _log_time(stamp[1])
    return first_stamp, False


def step_times(step: dict[str, Any]) -> StepTimes:
    """``step`` of an execution record split into runner, start-up and work."""
    seconds = float(step.get("duration_seconds") or 0.0)
    times_files = [Path(log).with_name("times.json") for log in step.get("logs", [])]
    times = [json.loads(p.read_text()) for p in times_files if p.is_file()]
    if not times:
        return StepTimes(step["name"], step["type"], seconds)
    # the first host's process: a step of several hosts is as slow as its slowest,
    # and they start together
    started = min(t["started"] for t in times)
    ended = max(t["ended"] for t in times)
    read, exact = first_read(Path(step["logs"][0]))
    startup = None if read is None else max(0.0, read - started)
    work = None if read is None else max(0.0, ended - read)
    return StepTimes(
        step["name"],
        step["type"],
        seconds,
        runner=max(0.0, seconds - (ended - started)),
        startup=startup,
        startup_exact=exact,
        work=work,
    )


def execution_span(execution: dict[str, Any]) -> float:
    """The execution's span: its first step's start to its last step's end."""
    starts, ends = [], []
    for step in execution["steps"]:
        if step.get("started_at") and step.get("duration_seconds") is not None:
            start = datetime.fromisoformat(step["started_at"]).timestamp()
            starts.append(start)
            ends.append(start + float(step["duration_seconds"]))
    return max(ends) - min(starts) if starts else 0.0


def load_baseline(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    document = json.loads(path.read_text())
    return {str(r["case"]): r for r in document.get("results", [])}


def _ratio(current: float | None, baseline: Any) -> str:
    if current is None or not isinstance(baseline, int | float) or baseline <= 0:
        return "-"
    return f"{current / baseline:.2f}x"


def _cell(value: float | None, exact: bool = True) -> str:
    if value is None:
        return "-"
    return f"{'' if exact else '~'}{value:.2f}"


def render(
    steps: list[StepTimes],
    whole: dict[str, Any],
    baseline: dict[str, dict[str, Any]],
) -> list[str]:
    """The table of steps and the whole loop, each with its ratio to the baseline."""
    lines = [
        f"{'step':<15} {'seconds':>8} {'runner':>7} {'start-up':>9} {'work':>7}"
        f"   {'baseline':>8} {'ratio':>6}   {'start-up base':>13}"
    ]
    for step in steps:
        if step.seconds < 0.05 and step.runner is None:
            continue  # conditions, registration: no job, nothing to split
        before = baseline.get(f"step:{step.name}", {})
        base = before.get("seconds")
        base_startup = before.get("startup_seconds")
        lines.append(
            f"{step.name:<15} {step.seconds:>8.2f} {_cell(step.runner):>7} "
            f"{_cell(step.startup, step.startup_exact):>9} {_cell(step.work):>7}"
            f"   {_cell(base):>8} {_ratio(step.seconds, base):>6}"
            f"   {_cell(base_startup):>13}"
        )
    before = baseline.get("loop", {})
    lines += [
        "",
        f"whole loop (the command): {whole['seconds']:.2f} s; baseline "
        f"{_cell(before.get('seconds'))} s; ratio "
        f"{_ratio(whole['seconds'], before.get('seconds'))} "
        f"(goal <= {GOAL_LOOP_SECONDS:.0f} s)",
        f"execution span (first step's start to last step's end): "
        f"{whole['execution_seconds']:.2f} s; baseline "
        f"{_cell(before.get('execution_seconds'))} s; ratio "
        f"{_ratio(whole['execution_seconds'], before.get('execution_seconds'))}",
    ]
    exact = [s for s in steps if s.startup is not None and s.startup_exact]
    if exact:
        slowest = max(exact, key=lambda s: s.startup or 0.0)
        lines.append(
            f"slowest processing start-up: {slowest.name} "
            f"{slowest.startup:.2f} s (goal <= {GOAL_STARTUP_SECONDS:.0f} s each)"
        )
    lines.append(
        "runner: around the job's process (image staging in the first job, inputs, "
        "outputs); start-up: process start to its first query or read "
        "(~: to its first log line); work: from there to its exit"
    )
    return lines


def measure(
    state_dir: Path, customers: int, port: int
) -> tuple[list[StepTimes], dict[str, Any], str]:
    """Seed, run the loop once, stop its endpoint; the steps, the whole, the output."""
    seeded = seed(state_dir, customers)
    try:
        seconds, output = run_loop(state_dir, customers, port)
    finally:
        stop_endpoint(state_dir)
    execution = latest_execution(state_dir)
    if execution.get("status") != "Succeeded":
        raise RuntimeError(f"execution {execution.get('execution_id')} did not succeed")
    steps = [step_times(s) for s in execution["steps"] if s.get("status")]
    steps = [s for s in steps if s.seconds or s.runner is not None]
    whole = {
        "case": "loop",
        "customers": customers,
        "seconds": round(seconds, 3),
        "execution_seconds": round(execution_span(execution), 3),
        "seed_seconds": round(seeded, 3),
    }
    return steps, whole, output


def median_of(
    runs: list[tuple[list[StepTimes], dict[str, Any]]],
) -> tuple[list[StepTimes], dict[str, Any]]:
    """Each figure's median over ``runs`` (steps by name, in the first run's order;
    a split that some run lacks is left out)."""
    first_steps, first_whole = runs[0]
    whole = dict(first_whole)
    for key in ("seconds", "execution_seconds", "seed_seconds"):
        whole[key] = round(statistics.median(w[key] for _, w in runs), 3)

    def median(values: list[float | None]) -> float | None:
        if any(v is None for v in values):
            return None
        return statistics.median(v for v in values if v is not None)

    steps = []
    for step in first_steps:
        same = [s for run, _ in runs for s in run if s.name == step.name]
        steps.append(
            StepTimes(
                name=step.name,
                kind=step.kind,
                seconds=statistics.median(s.seconds for s in same),
                runner=median([s.runner for s in same]),
                startup=median([s.startup for s in same]),
                startup_exact=all(s.startup_exact for s in same),
                work=median([s.work for s in same]),
            )
        )
    return steps, whole


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop")
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help=f"demo customers (default {DEFAULT_CUSTOMERS:,}; --quick "
        f"{QUICK_CUSTOMERS:,})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data, one minute")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="a fresh folder for the run's state, kept (default: a temporary one)",
    )
    parser.add_argument("--port", type=int, default=None, help="the endpoint's port")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs, each seeded into a fresh folder of its own; the table shows each "
        "figure's median (the cores are shared: one run is mostly load)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results")
    parser.add_argument(
        "--baseline", type=Path, default=BASELINE, help="compare with these results"
    )
    args = parser.parse_args(argv)
    customers = args.customers or (QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS)
    if args.state_dir is not None and any(args.state_dir.glob("*")):
        print(f"error: {args.state_dir} is not empty: give a fresh folder")
        return 2
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="loop-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)} "
        f"({os.cpu_count()} CPUs)",
        flush=True,
    )
    print(f"the loop on {customers:,} customers, state in {state_dir}", flush=True)
    runs: list[tuple[list[StepTimes], dict[str, Any]]] = []
    try:
        for number in range(1, max(1, args.repeat) + 1):
            folder = state_dir if args.repeat <= 1 else state_dir / f"run-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            steps, whole, _ = measure(
                folder.resolve(), customers, args.port or free_port()
            )
            whole["load"] = os.getloadavg()[0]
            runs.append((steps, whole))
            if args.repeat > 1:
                print(
                    f"run {number}: whole loop {whole['seconds']:.2f} s, execution "
                    f"{whole['execution_seconds']:.2f} s (load {whole['load']:.2f})",
                    flush=True,
                )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    steps, whole = median_of(runs)
    load_end = os.getloadavg()
    whole["load_start"], whole["load_end"] = load_start[0], load_end[0]
    baseline = load_baseline(args.baseline)
    if len(runs) > 1:
        print(f"medians of {len(runs)} runs")
    print(f"seeded in {whole['seed_seconds']:.1f} s (not counted)")
    print()
    for line in render(steps, whole, baseline):
        print(line)
    print()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "loop",
            "results": [whole, *(s.result() for s in steps)],
            "runs": [[w, *(s.result() for s in st)] for st, w in runs],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
