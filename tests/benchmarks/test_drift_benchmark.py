"""The drift benchmark's quick mode runs, so the benchmark never rots."""

import json

from benchmarks import drift


def test_quick_drift_benchmark_writes_results(tmp_path, capsys):
    target = tmp_path / "drift.json"
    assert drift.main(["--quick", "--json", str(target)]) == 0
    results = json.loads(target.read_text())["results"]
    ours, hand = results
    assert ours["case"].startswith("ours") and hand["case"].startswith("by hand")
    # the sketch keeps the statistics close to the exact ones
    assert ours["max_ks_error"] < 0.01 and ours["max_psi_error"] < 0.01
    assert ours["kept_bytes"] < hand["kept_bytes"]
    assert "ratios: by hand / ours" in capsys.readouterr().out
