"""benchmarks.compare: results against stored baselines, with the direction of each
metric read from its name, and benchmarks that exist when it runs."""

import json

import pytest

from benchmarks import compare


def _write(path, results, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": path.stem, "results": results, **extra}))


def test_ratios_and_regressions_follow_the_metric_direction(tmp_path):
    _write(
        tmp_path / "base" / "serve.json",
        [{"case": "1 row", "p99_ms": 2.0, "rows_per_s": 1000, "batches": 4}],
    )
    _write(
        tmp_path / "now" / "serve.json",
        [{"case": "1 row", "p99_ms": 4.0, "rows_per_s": 1100, "batches": 8}],
    )
    rows, missing = compare.check(tmp_path / "now", tmp_path / "base")
    by_metric = {row.metric: row for row in rows}
    assert missing == []
    assert by_metric["p99_ms"].ratio == 2.0
    assert by_metric["p99_ms"].regressed(0.5)  # twice as slow
    assert not by_metric["rows_per_s"].regressed(0.5)  # faster
    assert by_metric["batches"].direction == "?"
    assert not by_metric["batches"].regressed(0.5)  # no verdict without a direction
    table = compare.render(rows, missing, 0.5)
    assert "| serve | 1 row | p99_ms | 2 | 4 | 2 | REGRESSED |" in table


def test_a_baseline_can_state_the_direction(tmp_path):
    _write(
        tmp_path / "base" / "b.json",
        [{"case": "c", "batches": 10}],
        higher_is_better=["batches"],
    )
    _write(tmp_path / "now" / "b.json", [{"case": "c", "batches": 5}])
    (row,) = compare.check(tmp_path / "now", tmp_path / "base")[0]
    assert row.regressed(0.5)


def test_check_exits_1_on_regression_only_when_strict(tmp_path, capsys):
    _write(tmp_path / "base" / "b.json", [{"case": "c", "seconds": 1.0}])
    _write(tmp_path / "now" / "b.json", [{"case": "c", "seconds": 3.0}])
    args = ["check", str(tmp_path / "now"), "--baseline", str(tmp_path / "base")]
    assert compare.main(args) == 0
    assert compare.main([*args, "--strict"]) == 1
    assert "regressed: b c seconds 1 -> 3" in capsys.readouterr().err


def test_a_benchmark_without_baseline_is_named_and_a_bad_file_refused(tmp_path):
    _write(tmp_path / "now" / "new.json", [{"case": "c", "seconds": 1.0}])
    rows, missing = compare.check(tmp_path / "now", tmp_path / "base")
    assert missing == ["new"] and rows[0].ratio is None
    (tmp_path / "now" / "broken.json").write_text('{"results": 3}')
    with pytest.raises(compare.ResultError, match="broken.json"):
        compare.check(tmp_path / "now", tmp_path / "base")
    assert compare.main(["check", str(tmp_path / "now")]) == 2


def test_run_finds_the_benchmarks_present_and_reports_failures(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "compare.py").write_text("")
    (tmp_path / "speed.py").write_text("")
    assert compare.discover(tmp_path) == ["speed"]
    assert compare.run(tmp_path / "out", quick=True, names=["no_such_bench"]) == 1
