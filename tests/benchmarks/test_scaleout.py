"""The scale-out benchmark runs (a smoke test: tiny sizes, no timing asserted), the
Extract jobs run the feature query once per instance, counted at the server, and the
two tuning runs train the same trials."""

import json
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_scaleout_benchmark_prints_each_section_and_counts_query_runs(tmp_path):
    out = tmp_path / "scaleout.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaleout", "--quick", "--json", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in (
        "load average at start",
        "== Extract with ProcessingInstanceCount 1 and 2",
        "speed-up, 2 instances vs 1",
        "== Train with TrainingInstanceCount 1 and 2",
        "speed-up, 2 hosts vs 1, CPUs split",
        "== Tune with MaxParallelTrainingJobs 1 and 2",
        "the same trials in both runs (Random, one seed): yes",
        "load average at end",
    ):
        assert expected in result.stdout, result.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "scaleout"
    cases = {r["case"]: r for r in report["results"]}
    assert set(cases) == {
        "extract@1",
        "extract@2",
        "extract 2 vs 1",
        "train@1",
        "train@2",
        "train@2-split",
        "train 2 vs 1 split",
        "train 2 vs 1",
        "tuning@1",
        "tuning@2",
        "tuning 2 vs 1",
    }
    # once per instance now; slices + 2 per instance before (several slices each)
    assert cases["extract@1"]["query_runs"] == 1
    assert cases["extract@2"]["query_runs"] == 2
    assert cases["extract@1"]["query_runs_before"] > 3
    assert cases["extract@2"]["query_runs_before"] > 6
    assert cases["extract@1"]["rows"] == cases["extract@2"]["rows"] > 0
    two_instances = next(
        line for line in result.stdout.splitlines() if line.startswith("        2 ")
    )
    assert two_instances.split()[-1] == "1+1"  # each instance ran it once
    # every training run saw the same rows, the 2-instance Extract's train split
    rows = {cases[c]["train_rows"] for c in ("train@1", "train@2", "train@2-split")}
    assert len(rows) == 1 and rows.pop() > 0
    assert all(r["speedup"] > 0 for r in cases.values() if "speedup" in r)
    # the tuning runs trained the same trials, so they found the same best
    assert cases["tuning@1"]["trials"] == cases["tuning@2"]["trials"] == 2
    assert cases["tuning 2 vs 1"]["same_trials"] is True
    assert (
        cases["tuning@1"]["best_validation_auc"]
        == (cases["tuning@2"]["best_validation_auc"])
    )
