"""The inner-loop benchmark: its split of a step from a job's log and ``times.json``,
and one whole run at a tiny size (its output's structure; no timing asserted)."""

import json
import subprocess
import sys
from datetime import datetime

from benchmarks.loop import StepTimes, first_read, median_of, step_times
from tests.conftest import PROJECT_ROOT, SMALL_CUSTOMERS


def _stamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def _job(tmp_path, log_lines, started=1_000_000.0, ended=1_000_004.0):
    folder = tmp_path / "algo-1"
    folder.mkdir()
    (folder / "job.log").write_text("\n".join(log_lines) + "\n")
    (folder / "times.json").write_text(
        json.dumps({"started": started, "ended": ended, "exit_code": 0})
    )
    return str(folder / "job.log")


def test_a_step_splits_at_its_first_read_line(tmp_path):
    log = _job(
        tmp_path,
        [
            f"{_stamp(1_000_000.5)} matplotlib.font_manager generated new fontManager",
            f"{_stamp(1_000_001.25)} processing.gate first read: the evaluation",
            f"{_stamp(1_000_003.0)} processing.gate gate: register",
        ],
    )
    step = {"name": "Gate", "type": "Processing", "duration_seconds": 5.0}
    times = step_times({**step, "logs": [log]})
    assert times.startup is not None and abs(times.startup - 1.25) < 0.01
    assert times.startup_exact
    assert times.work is not None and abs(times.work - 2.75) < 0.01
    assert times.runner is not None and abs(times.runner - 1.0) < 0.01
    assert times.result()["case"] == "step:Gate"


def test_without_a_first_read_line_the_first_log_line_is_taken_and_marked(tmp_path):
    log = _job(tmp_path, ["no stamp", f"{_stamp(1_000_002.0)} training.metrics [0]"])
    read, exact = first_read(tmp_path / "algo-1" / "job.log")
    assert read is not None and not exact
    step = {"name": "Train", "type": "Training", "duration_seconds": 4.0}
    times = step_times({**step, "logs": [log]})
    assert times.result()["startup_to"] == "first log line"


def test_a_step_without_a_job_has_only_its_seconds(tmp_path):
    times = step_times(
        {"name": "Deploy", "type": "Endpoint", "duration_seconds": 3.0, "logs": []}
    )
    assert (times.seconds, times.runner, times.startup) == (3.0, None, None)
    assert first_read(tmp_path / "missing.log") == (None, True)


def test_repeated_runs_give_each_figure_its_median():
    def run(seconds, startup, whole, deploy=None):
        steps = [
            StepTimes("Train", "Training", seconds, 0.01, startup, False, seconds - 1),
            StepTimes("Deploy", "Endpoint", deploy or 2.0),
        ]
        return steps, {
            "case": "loop",
            "seconds": whole,
            "execution_seconds": whole - 4,
            "seed_seconds": 3.0,
        }

    steps, whole = median_of(
        [run(5.0, 1.0, 21.0), run(3.0, None, 19.0, 1.0), run(4.0, 2.0, 30.0, 3.0)]
    )
    train, deploy = steps
    assert (train.name, train.seconds, train.work) == ("Train", 4.0, 3.0)
    assert train.startup is None  # one run lacks it: no median of the others
    assert not train.startup_exact
    assert (deploy.seconds, deploy.runner) == (2.0, None)
    assert (whole["seconds"], whole["execution_seconds"]) == (21.0, 17.0)


def test_the_loop_benchmark_runs_the_loop_and_prints_each_step(tmp_path):
    out = tmp_path / "loop.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.loop", "--customers", str(SMALL_CUSTOMERS)]
        + ["--state-dir", str(tmp_path / "state"), "--json", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in (
        "load average at start",
        "step             seconds  runner  start-up    work",
        "whole loop (the command):",
        "slowest processing start-up:",
        "load average at end",
    ):
        assert expected in result.stdout, result.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "loop"
    cases = {r["case"]: r for r in report["results"]}
    assert cases["loop"]["customers"] == SMALL_CUSTOMERS
    assert {"seconds", "execution_seconds", "load_start", "load_end"} <= set(
        cases["loop"]
    )
    for name in ("Preflight", "Extract", "Baseline", "Evaluate", "Gate", "Track"):
        step = cases[f"step:{name}"]
        assert {"runner_seconds", "startup_seconds", "work_seconds"} <= set(step)
        assert "startup_to" not in step  # each logs its first read
    assert "step:Train" in cases and "step:Deploy" in cases
    # the ratios to the stored baseline are printed
    assert "x" in result.stdout.split("whole loop (the command):")[1].splitlines()[0]
