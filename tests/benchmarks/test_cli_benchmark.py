"""The CLI benchmark runs (so it never rots); its figures are for people, not asserts."""

import json

from benchmarks import cli


def test_the_cli_benchmark_measures_help_against_the_sdk_import(tmp_path, capsys):
    target = tmp_path / "cli.json"
    assert cli.main(["--quick", "--only=--help", "--json", str(target)]) == 0
    results = json.loads(target.read_text())
    assert results["benchmark"] == "cli"
    cases = {r["case"]: r for r in results["results"]}
    assert set(cases) == {
        'python -c "import sagemaker.mlops"',
        "python -m pipelines.run --help",
    }
    assert all(
        r["median_s"] > 0 and r["ratio_to_sdk_import"] > 0 for r in cases.values()
    )
    assert "vs SDK import" in capsys.readouterr().out
