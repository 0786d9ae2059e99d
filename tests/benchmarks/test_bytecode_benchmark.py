"""The bytecode benchmark: its two images really differ in the one way it says, and
its comparison of two loops' figures (no timing asserted)."""

import json
import subprocess

from benchmarks.bytecode import (
    NO_BYTECODE,
    compare,
    copy_project,
    figures,
    render,
    without_bytecode,
)
from pipelines.image import read_dockerfile, stage_image
from pipelines.local_jobs import Container, Platform
from tests.conftest import PROJECT_ROOT

# What a job's Python reports: where json's bytecode would be and whether it is there.
_PROBE = (
    "import json, os, sys\n"
    "print(json.dumps({'prefix': sys.pycache_prefix, "
    "'cached': json.__spec__.cached, 'read': os.path.exists(json.__spec__.cached)}))"
)


def _probe(image, folder):
    container = Container(image, Platform(isolation="auto"))
    instance = container.instance(folder / "job", "algo-1")
    argv, env = container.command(["python", "-c", _PROBE], instance, {}, {})
    done = subprocess.run(
        argv, env=env, cwd=instance.workdir, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_copy_holds_the_project_and_not_what_git_ignores(tmp_path):
    copy = copy_project(tmp_path / "copy")
    assert (copy / "Dockerfile").read_bytes() == (
        PROJECT_ROOT / "Dockerfile"
    ).read_bytes()
    assert (copy / "processing" / "extract.py").is_file()
    assert not (copy / ".venv").exists() and not (copy / ".git").exists()


def test_only_the_variant_image_finds_no_bytecode(tmp_path):
    copy = copy_project(tmp_path / "copy")
    without_bytecode(copy / "Dockerfile")
    spec = read_dockerfile(copy / "Dockerfile")
    assert spec.env["PYTHONPYCACHEPREFIX"] == NO_BYTECODE
    assert "PYTHONPYCACHEPREFIX" not in read_dockerfile(PROJECT_ROOT / "Dockerfile").env

    plain = _probe(
        stage_image(tmp_path / "images", PROJECT_ROOT / "Dockerfile"), tmp_path / "a"
    )
    variant = _probe(
        stage_image(tmp_path / "images", copy / "Dockerfile", copy), tmp_path / "b"
    )
    # the image as built reads the standard library's bytecode ...
    assert plain["prefix"] is None and plain["read"]
    # ... the variant looks for it where there is none, so it compiles from source
    assert variant["prefix"] == NO_BYTECODE
    assert variant["cached"].startswith(NO_BYTECODE) and not variant["read"]


def _document(loop, steps):
    return {
        "results": [
            {"case": "loop", "seconds": loop, "execution_seconds": loop - 4},
            *({"case": f"step:{name}", "seconds": s} for name, s in steps.items()),
        ]
    }


def test_the_comparison_takes_medians_and_divides_without_by_with():
    runs = {
        "without": [
            figures(_document(40.0, {"Train": 9.0, "Tune": 1.0})),
            figures(_document(44.0, {"Train": 8.0})),
            figures(_document(42.0, {"Train": 10.0})),
        ],
        "with bytecode": [
            figures(_document(20.0, {"Train": 3.0})),
            figures(_document(19.0, {"Train": 4.0})),
            figures(_document(21.0, {"Train": 5.0})),
        ],
    }
    rows = {row["case"]: row for row in compare(runs)}
    assert rows["loop"] == {
        "case": "loop",
        "without_seconds": 42.0,
        "with_seconds": 20.0,
        "saved_seconds": 22.0,
        "ratio": 2.1,
    }
    assert rows["execution"]["saved_seconds"] == 22.0
    assert rows["step:Train"]["ratio"] == 2.25
    # a step only some runs had is left out rather than compared on fewer runs
    assert "step:Tune" not in rows
    table = render(list(rows.values()))
    assert table[1].split() == ["loop", "42.00", "20.00", "22.00", "2.10x"]
