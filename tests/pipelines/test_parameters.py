"""Every pipeline parameter's domain, declared once (pipelines/parameters.py) and
checked before any work, with the parameter's own name in the message.
"""

import socket

import pytest

from pipelines.parameters import PARAMETERS, ParameterError, check_parameters
from tests.conftest import free_port, run_cli

# (parameter, a value in its domain, values outside it and what the message says)
DOMAINS = [
    (
        "AsOfDate",
        "2026-03-31",
        [
            ("notadate", "not a date"),
            ("2026-3-31", "not a date"),
            ("2026-02-30", "not a date"),
        ],
    ),
    (
        "LabelWindowDays",
        "90",
        [("0", "at least 1"), ("3651", "at most 3650"), ("ninety", "not an Integer")],
    ),
    ("ProcessingInstanceCount", "2", [("0", "at least 1"), ("101", "at most 100")]),
    (
        "TrainingInstanceCount",
        "2",
        [("0", "at least 1"), ("21", "at most 20"), ("two", "not an Integer")],
    ),
    (
        "AucThreshold",
        "0.7",
        [("-0.1", "at least 0"), ("1.5", "at most 1"), ("high", "not a Float")],
    ),
    (
        "ModelApprovalStatus",
        "PendingManualApproval",
        [("Yes", "one of Approved"), ("approved", "one of Approved")],
    ),
    ("DataVersion", "2026-04-01T00:00:00+00:00", [("yesterday", "neither 'latest'")]),
    ("ChampionTolerance", "0.01", [("-1", "at least 0"), ("2", "at most 1")]),
    (
        "GitCommit",
        "6290f11",
        [("main", "git commit"), ("6290f11; rm -rf /", "git commit")],
    ),
    ("WriteBack", "true", [("yes", "not a Boolean")]),
    ("MaxDepth", "6", [("0", "at least 1"), ("31", "at most 30")]),
    (
        "LearningRate",
        "0.05",
        [("0", "above 0"), ("-1", "above 0"), ("1.5", "at most 1")],
    ),
    ("NumRound", "500", [("0", "at least 1"), ("100001", "at most 100000")]),
    ("ForceRetrain", "false", [("maybe", "not a Boolean")]),
    ("MaxNumberOfTrainingJobs", "8", [("0", "at least 1"), ("501", "at most 500")]),
    ("MaxParallelTrainingJobs", "2", [("0", "at least 1"), ("101", "at most 100")]),
]


def test_every_parameter_has_one_domain_here():
    assert {name for name, _, _ in DOMAINS} == set(PARAMETERS)


@pytest.mark.parametrize(("name", "good", "bad"), DOMAINS, ids=[d[0] for d in DOMAINS])
def test_each_parameter_takes_its_domain_and_names_itself_when_outside(name, good, bad):
    check_parameters({name: good})
    for value, reason in bad:
        with pytest.raises(ParameterError) as raised:
            check_parameters({name: value})
        message = str(raised.value)
        assert message.startswith(f"parameter {name}=") and reason in message, message


def test_the_definitions_declare_exactly_these_parameters_with_these_types():
    from monitoring.pipeline import build_monitor_definition
    from pipelines.definition import build_definition
    from stack.config import load_config

    config = load_config("local", environ={})
    # with a tuning step in place of Train: its job limits
    tuning = load_config("local", {"training.tuning.enabled": True}, environ={})
    declared = {
        p["Name"]: p
        for definition in (
            build_definition(config),
            build_definition(tuning),
            build_monitor_definition(config),
        )
        for p in definition["Parameters"]
    }
    assert set(declared) == set(PARAMETERS)
    for name, parameter in declared.items():
        assert parameter["Type"] == PARAMETERS[name].kind, name
        check_parameters({name: parameter["DefaultValue"]})  # the defaults are in it


def test_a_bad_parameter_exits_2_before_any_work(tmp_path):
    state = tmp_path / "state"
    result = run_cli("--param", "LearningRate=-1", "--state-dir", str(state))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: parameter LearningRate=-1.0 must be above 0"
    assert not state.exists()


def test_a_busy_endpoint_port_exits_2_before_any_step(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        state = tmp_path / "state"
        result = run_cli("--port", str(port), "--state-dir", str(state))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (state / "executions").exists()
