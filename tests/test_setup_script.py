"""scripts/setup.sh: what a newcomer sees while it installs (with a stand-in pip, so no
network): a line per phase and every 50 packages, no setuptools warning block, and
nothing at all once the install is current.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# pip's output for a fresh install, then the editable build's warning, which the real
# build backend raises (setuptools' InformationOnly is a UserWarning)
FAKE_PIP = f"""#!/usr/bin/env bash
for i in $(seq 1 120); do echo "Collecting pkg$i==1.0 (from x)"; done
echo "Building wheels for collected packages: snowflake-sagemaker-mlops"
echo "Installing collected packages: a, b, c"
echo "Successfully installed a-1 b-1 c-1"
echo "WARNING: Location 'file:///nowhere/' is ignored: it is neither a file nor a directory." >&2
{sys.executable} -c 'import warnings; warnings.warn("Editable installation.\\n!!\\n    Please be careful", UserWarning)'
"""


def _checkout(tmp_path: Path) -> Path:
    for name in ("setup.cfg", "pyproject.toml", "constraints.txt", "scripts/setup.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PIP)
    python.chmod(0o755)
    return tmp_path


def _setup(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/setup.sh", "--dev"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_says_how_far_it_is_without_the_warning_block(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)

    result = _setup(checkout)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert re.sub(r"Done in \d+s", "Done in Ns", result.stderr).splitlines() == [
        "Installing dependencies into .venv (locked by constraints.txt) ...",
        "  resolving packages: 50 (pkg50==1.0)",
        "  resolving packages: 100 (pkg100==1.0)",
        "  building the project's editable wheel ...",
        "  installing 3 packages (the longest part) ...",
        "  installed 3 packages",
        "Done in Ns: .venv is ready.",
    ]
    again = _setup(checkout)  # nothing changed: nothing to do, nothing said
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
