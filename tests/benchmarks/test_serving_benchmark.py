"""The serving benchmark's quick mode runs, so the benchmark never rots."""

import json
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_quick_serving_benchmark_writes_results(tmp_path):
    out = tmp_path / "serving.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.serving",
            "--quick",
            "--seconds",
            "0.3",
            "--servers",
            "ours,capture",
            "--concurrency",
            "2",
            "--loadgen",
            "asyncio",
            "--json",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ours/best peer" in result.stdout
    document = json.loads(out.read_text())
    assert document["benchmark"] == "serving"
    cells = [r for r in document["results"] if r["case"].startswith("ours/")]
    assert {c["case"] for c in cells} >= {"ours/csv-1/c2", "ours/json-10/c2"}
    assert all(
        c["requests_per_s"] > 0 and c["errors"] == 0
        for c in cells
        if "idle" not in c["case"]
    )
    # capture on, beside it: every answered request captured, nothing failed
    on = [r for r in document["results"] if r["case"].startswith("capture/")]
    cells = [r for r in on if r["case"].count("/") == 2 and "requests_per_s" in r]
    assert {c["case"] for c in cells} >= {"capture/csv-1/c2", "capture/json-10/c2"}
    assert all(c["errors"] == 0 and c["ratio_to_no_capture"] > 0 for c in cells)
    written = next(r for r in on if r["case"] == "capture/written")
    assert written["events"] > 0 and written["files"] >= 1
    assert "data capture (100 % of requests and responses) on vs off" in result.stdout
