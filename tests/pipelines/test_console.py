"""What the CLIs share (``pipelines.console``): global options before or after the
subcommand, where a person finds an object, and the executions listing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipelines import approve, endpoint, executions
from pipelines.arguments import ENV_OPTION, LOG_FORMAT_OPTION, add_global_options
from pipelines.console import location
from pipelines.local_runner import Execution, StepRecord
from stack.objectstore import LocalObjectStore, S3ObjectStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list")
    listing.add_argument("--limit", type=int, default=20)
    add_global_options(parser, [listing], [ENV_OPTION, LOG_FORMAT_OPTION])
    return parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "dev", "--log-format", "json", "list"],
        ["list", "--env", "dev", "--log-format", "json"],
        ["--env", "dev", "list", "--log-format", "json"],
    ],
)
def test_global_options_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert (args.env, args.log_format, args.limit) == ("dev", "json", 20)


def test_global_options_keep_their_defaults_and_the_last_one_wins() -> None:
    args = _parser().parse_args(["list"])
    assert (args.env, args.log_format) == (None, "text")
    assert _parser().parse_args(["--env", "dev", "list", "--env", "prod"]).env == "prod"
    with pytest.raises(SystemExit):
        _parser().parse_args(["list", "--log-format", "xml"])  # choices still apply


def test_location_is_a_file_locally_and_the_uri_on_s3(tmp_path: Path) -> None:
    uri = "s3://mlops-local/churn/x/evaluation/report.html"
    local = LocalObjectStore(tmp_path / "s3")
    expected = tmp_path / "s3" / "mlops-local" / "churn" / "x" / "evaluation"
    assert location(local, uri) == str((expected / "report.html").resolve())
    assert location(S3ObjectStore(client=None), uri) == uri


def _record(root: Path, execution_id: str, status: str, steps: list) -> None:
    directory = root / "executions" / execution_id
    directory.mkdir(parents=True)
    Execution(
        execution_id=execution_id,
        pipeline_name="churn-pipeline",
        parameters={},
        directory=str(directory),
        status=status,
        started_at=f"2026-11-24T09:{len(steps):02d}:00+00:00",
        ended_at=f"2026-11-24T09:{len(steps):02d}:42.5+00:00",
        steps=steps,
    ).save()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Two executions: one that failed at CheckAuc, then one that succeeded."""
    failed = [
        StepRecord("Train", "Training", "Succeeded", "2026-11-24T09:02:00+00:00", 40),
        StepRecord(
            "CheckAuc",
            "Condition",
            "Failed",
            "2026-11-24T09:02:40+00:00",
            0.1,
            failure_reason="test AUC 0.61 < threshold 0.70",
        ),
    ]
    _record(tmp_path, "bad", "Failed", failed)
    _record(tmp_path, "good", "Succeeded", failed[:1] * 3)
    return tmp_path


def test_executions_list_shows_duration_and_the_failed_step_and_why(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert executions.main(["list", "--env", "local", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "good  Succeeded   2026-11-24T09:03:00+00:00     42.5s",
        "bad  Failed      2026-11-24T09:02:00+00:00     42.5s  failed at CheckAuc: "
        "test AUC 0.61 < threshold 0.70",
    ]


@pytest.mark.parametrize(
    ("main", "command", "expected"),
    [
        (executions.main, ["list"], "bad  Failed"),
        (approve.main, ["list"], "VERSION  STATUS"),
        (endpoint.main, ["status"], "no local endpoints"),
    ],
    ids=["executions", "approve", "endpoint"],
)
def test_every_cli_takes_its_global_options_on_either_side(
    state: Path, capsys: pytest.CaptureFixture[str], main, command, expected
) -> None:
    options = ["--env", "local", "--state-dir", str(state)]
    for argv in ([*options, *command], [*command, *options]):
        assert main(argv) == 0, argv
        assert expected in capsys.readouterr().out, argv


def test_a_state_dir_option_names_the_state_folder(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = state / "elsewhere"
    assert executions.main(["list", "--state-dir", str(empty), "--env", "local"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no executions in" in captured.err
