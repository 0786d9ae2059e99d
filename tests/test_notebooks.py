"""Run each notebook's code cells top to bottom, as a kernel would, on the embedded stack.

Cells tagged ``skip-in-tests`` (installs) are left out; IPython magics are not used in the
others. A cell's last expression is evaluated but, unlike in a kernel, not displayed.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, free_port

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def script_of(notebook) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    code = [
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code"
        and "skip-in-tests" not in c["metadata"].get("tags", [])
    ]
    assert not any(
        line.lstrip().startswith(("%", "!")) for c in code for line in c.splitlines()
    )
    return "\n\n".join(code)


@pytest.mark.e2e
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        {
            "MLOPS_STATE_DIR": str(tmp_path / "state"),
            "MLOPS_LOCAL_ENDPOINT__PORT": str(free_port()),
            "PYTHONPATH": str(PROJECT_ROOT),
        }
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script_of(notebook)],
            cwd=notebook.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:  # a notebook that failed half-way may have left its endpoint serving
        subprocess.run(
            [sys.executable, "-m", "pipelines.endpoint", "stop"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Succeeded" in result.stdout


def test_there_is_a_quickstart():
    assert [p.name for p in NOTEBOOKS] == ["quickstart.ipynb"]
