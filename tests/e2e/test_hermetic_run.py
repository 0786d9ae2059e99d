"""The README's run from a bare shell and from a shell full of unrelated variables:
the same executed definition and the same step results, because no job sees the
caller's environment and nothing outside the configuration shapes the definition.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_port

pytestmark = pytest.mark.e2e

# What a developer's or a CD runner's shell holds that is none of the run's business
NOISE = {
    "MLOPS_TEAM": "ml-platform",
    "MLOPS_BUILD_NUMBER": "1742",
    "AWS_PROFILE": "prod-admin",
    "AWS_ACCESS_KEY_ID": "shell-key-id",
    "AWS_SECRET_ACCESS_KEY": "shell-secret-key",
    "AWS_SESSION_TOKEN": "shell-session-token",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "SNOWFLAKE_ACCOUNT": "acme-prod",
    "SNOWFLAKE_USER": "ANALYST",
    "SNOWFLAKE_PASSWORD": "shell-snowflake-password",
    "SNOWFLAKE_WAREHOUSE": "BIG_WH",
    "OMP_NUM_THREADS": "7",
}
RESULT_LINES = ("Test metrics:", "Gate:", "Model package:", "Predictions:")


def run(shell: dict[str, str], state: Path, port: int, seeded: Path) -> dict:
    """``python -m pipelines.run`` in ``shell`` alone; what it executed and found."""
    shutil.rmtree(state, ignore_errors=True)
    shutil.copytree(seeded, state / "snowflake")
    args = ["--customers", "3000", "--port", str(port), "--state-dir", str(state)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.run", *args],
            cwd=PROJECT_ROOT,
            env=shell,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.endpoint",
                "stop",
                "--state-dir",
                str(state),
            ],
            cwd=PROJECT_ROOT,
            env=shell,
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (execution,) = (state / "executions").iterdir()
    record = json.loads((execution / "execution.json").read_text())
    return {
        "definition": (execution / "definition.json").read_text(),
        "parameters": record["parameters"],
        "steps": {s["name"]: s["status"] for s in record["steps"]},
        "results": [
            line for line in result.stdout.splitlines() if line.startswith(RESULT_LINES)
        ],
        "text": result.stdout + result.stderr,
    }


def test_a_bare_shell_and_a_noisy_one_execute_the_same(seeded_snowflake_dir, tmp_path):
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    port, state = free_port(), tmp_path / "state"
    quiet = run(bare, state, port, seeded_snowflake_dir)
    noisy = run({**bare, **NOISE}, state, port, seeded_snowflake_dir)
    assert quiet["definition"] == noisy["definition"]
    assert quiet["parameters"] == noisy["parameters"]
    assert quiet["steps"] == noisy["steps"]
    assert quiet["steps"]["WriteBack"] == "Succeeded"
    assert len(quiet["results"]) == 4 and quiet["results"] == noisy["results"]
    for value in NOISE.values():
        assert len(value) < 4 or value not in noisy["definition"]
    assert "shell-snowflake-password" not in noisy["text"]
