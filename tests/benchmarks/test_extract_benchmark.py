"""The extract benchmark still runs (a smoke test: tiny sizes, no timing asserted)."""

import json
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_extract_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "extract.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.extract",
            "--quick",
            "--sizes",
            "3000",
            "--methods",
            "b",
            "d",
            "floor",
            "--slice-rows",
            "1000",
            "--json",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(d) ours, 2 workers" in result.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "extract"
    cases = {r["case"]: r for r in report["results"]}
    assert set(cases) == {"b@3000", "d@3000", "floor@3000"}
    assert all(r["rows"] == 3000 and r["peak_rss_mb"] > 0 for r in cases.values())
