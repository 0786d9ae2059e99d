"""A runner killed -9 in the middle of Train, as a crash or an OOM kill would: the
execution reads as Failed, "runner died", and a retry completes it, registering once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from stack.registry import LocalModelRegistry
from tests.conftest import PROJECT_ROOT, SMALL_CUSTOMERS, free_port
from tests.e2e.test_whole_loop import state  # noqa: F401

pytestmark = pytest.mark.e2e


def cli(module, *args, **variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_runner_killed_in_train_fails_its_execution_and_a_retry_completes_it(
    state,  # noqa: F811
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    port = str(free_port())  # the retry deploys where the run would have
    runner = subprocess.Popen(
        [sys.executable, "-m", "pipelines.run", "--state-dir", str(state),
         "--customers", str(SMALL_CUSTOMERS), "--port", port],
        cwd=PROJECT_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    record = None
    while record is None or record["Train"] != "Executing":
        assert runner.poll() is None, "the run ended before Train"
        assert time.monotonic() < deadline, "Train never started"
        time.sleep(0.2)
        paths = list(state.glob("executions/*/execution.json"))
        if paths:
            data = json.loads(paths[0].read_text())
            record = {s["name"]: s["status"] for s in data["steps"]}
    time.sleep(1.0)  # in the middle of the training job
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=30)
    execution = paths[0].parent.name

    listed = cli("pipelines.executions", "list", "--state-dir", str(state))
    assert listed.returncode == 0, listed.stderr
    (line,) = [x for x in listed.stdout.splitlines() if x.startswith(execution)]
    assert "Failed" in line and "failed at Train: runner died (pid " in line

    retried = cli(
        "pipelines.executions", "retry", execution, "--state-dir", str(state),
        MLOPS_LOCAL_ENDPOINT__PORT=port,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stdout + retried.stderr
    versions = LocalModelRegistry(state / "registry", "us-east-1").list_versions(
        "churn-models"
    )
    assert [v.customer_metadata["pipeline_execution_id"] for v in versions] == [
        execution
    ]
    data = json.loads(paths[0].read_text())
    assert data["status"] == "Succeeded" and data["attempts"] == 2
