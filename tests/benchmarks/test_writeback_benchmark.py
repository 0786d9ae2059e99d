"""The write-back benchmark still runs (a smoke test: tiny sizes, no timing asserted)."""

import json
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_writeback_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "writeback.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.writeback", "--quick", "--json", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executemany / whole job" in result.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "writeback"
    cases = {r["case"]: r for r in report["results"]}
    assert set(cases) == {
        "write",
        "executemany",
        "query",
        "job",
        "job_rerun",
        "per_row",
    }
    assert cases["write"]["rows"] == 2000 and cases["job"]["rows"] > 1000
    assert cases["job_rerun"]["rows"] == 0
    job = cases["job"]  # the breakdown of the time outside the endpoint calls
    assert job["query_seconds"] > 0 and job["stage_merge_seconds"] > 0
    parts = ("setup", "query", "stage_merge", "python")
    assert abs(sum(job[f"{p}_seconds"] for p in parts) - job["other_seconds"]) < 1e-6
    assert cases["job_rerun"]["rows_unchanged"] == cases["job"]["rows"]
    assert (
        cases["executemany"]["estimated"] and cases["per_row"]["measured_rows"] == 100
    )
