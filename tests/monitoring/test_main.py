"""``python -m monitoring``: the command named, its options passed on, and ``--env`` and
``--state-dir`` taken before the command as well as after it.
"""

from __future__ import annotations

import pytest

from monitoring import __main__ as cli
from monitoring import check


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What ``monitoring.check.main`` is called with (it is not run)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(check, "main", lambda argv: calls.append(list(argv)) or 0)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "dev", "--state-dir", "s", "check", "--source", "predictions"],
        ["check", "--env", "dev", "--state-dir", "s", "--source", "predictions"],
        ["--env", "dev", "check", "--state-dir", "s", "--source", "predictions"],
    ],
)
def test_global_options_before_or_after_the_command(
    received: list[list[str]], argv: list[str]
) -> None:
    assert cli.main(argv) == 0
    forwarded = received[0]
    assert forwarded[forwarded.index("--env") + 1] == "dev"
    assert forwarded[forwarded.index("--state-dir") + 1] == "s"
    assert forwarded[-2:] == ["--source", "predictions"]


def test_an_option_after_the_command_wins(received: list[list[str]]) -> None:
    cli.main(["--env", "dev", "check", "--env", "prod"])
    assert received == [["--env", "dev", "--env", "prod"]]  # argparse keeps the last


def test_the_command_parses_what_it_is_given(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--state-dir", str(tmp_path), "check", "--source", "nowhere"])
    assert exit_.value.code == 2
    assert "python -m monitoring check: error: argument --source" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("argv", [[], ["nope"], ["--env"]])
def test_a_missing_or_unknown_command_is_a_usage_error(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m monitoring")


def test_help_lists_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
