import contextlib
import json
from pathlib import Path

import pytest

from pipelines.local_runner import (
    DefinitionError,
    LocalRunner,
    bind_parameters,
    evaluate_condition,
    flatten_steps,
)
from stack.resources import build_resources

WRITE_REPORT = (
    "import json, os, pathlib, sys; "
    "root = pathlib.Path(os.environ['OPT_ML_ROOT']); "
    "out = root / 'processing' / 'report'; out.mkdir(parents=True, exist_ok=True); "
    "(out / 'report.json').write_text(json.dumps({'metrics': {'score': float(sys.argv[1])}, "
    "'host': json.loads((root / 'config' / 'resourceconfig.json').read_text())['current_host'],"
    " 'env': os.environ['STEP_ENV']}))"
)
READ_INPUT = (
    "import os, pathlib, sys; "
    "root = pathlib.Path(os.environ['OPT_ML_ROOT']); "
    "files = sorted(p.name for p in (root / 'processing' / 'input').iterdir()); "
    "files == ['report.json'] or sys.exit('unexpected input ' + repr(files))"
)
FAIL_WITH_MESSAGE = (
    "import os, pathlib, sys; "
    "m = pathlib.Path(os.environ['OPT_ML_ROOT']) / 'output' / 'message'; "
    "m.parent.mkdir(parents=True, exist_ok=True); m.write_text('the data was bad'); sys.exit(1)"
)


def processing(
    name, code, args=(), outputs=(), inputs=(), instances=1, property_files=None
):
    step = {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceType": "ml.m5.large",
                    "InstanceCount": instances,
                    "VolumeSizeInGB": 1,
                }
            },
            "AppSpecification": {
                "ImageUri": "img",
                "ContainerEntrypoint": ["python", "-c", code],
                "ContainerArguments": list(args),
            },
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "Environment": {"STEP_ENV": "from-definition"},
            "ProcessingInputs": list(inputs),
            "ProcessingOutputConfig": {"Outputs": list(outputs)},
        },
    }
    if property_files:
        step["PropertyFiles"] = property_files
    return step


def report_output(name="report"):
    return {
        "OutputName": name,
        "S3Output": {
            "S3Uri": {
                "Std:Join": {
                    "On": "/",
                    "Values": [
                        "s3://mlops-local/t",
                        {"Get": "Execution.PipelineExecutionId"},
                        name,
                    ],
                }
            },
            "LocalPath": "/opt/ml/processing/report",
            "S3UploadMode": "EndOfJob",
        },
    }


def definition(threshold_default=0.5, fail_second=False):
    score_arg = {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Score"}]}}
    second = processing(
        "Consume",
        FAIL_WITH_MESSAGE if fail_second else READ_INPUT,
        inputs=[
            {
                "InputName": "in",
                "S3Input": {
                    "S3Uri": {
                        "Get": "Steps.Produce.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"
                    },
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
    )
    score_value = {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Produce.PropertyFiles.Report"},
            "Path": "metrics.score",
        }
    }
    return {
        "Version": "2020-12-01",
        "Parameters": [
            {"Name": "Score", "Type": "Float", "DefaultValue": 0.9},
            {"Name": "Threshold", "Type": "Float", "DefaultValue": threshold_default},
        ],
        "Steps": [
            processing(
                "Produce",
                WRITE_REPORT,
                args=[score_arg],
                outputs=[report_output()],
                property_files=[
                    {
                        "PropertyFileName": "Report",
                        "OutputName": "report",
                        "FilePath": "report.json",
                    }
                ],
            ),
            second,
            {
                "Name": "Check",
                "Type": "Condition",
                "DependsOn": ["Consume"],
                "Arguments": {
                    "Conditions": [
                        {
                            "Type": "GreaterThanOrEqualTo",
                            "LeftValue": score_value,
                            "RightValue": {"Get": "Parameters.Threshold"},
                        }
                    ],
                    "IfSteps": [],
                    "ElseSteps": [
                        {
                            "Name": "TooLow",
                            "Type": "Fail",
                            "Arguments": {
                                "ErrorMessage": {
                                    "Std:Join": {
                                        "On": " ",
                                        "Values": [
                                            "score",
                                            score_value,
                                            "below",
                                            {"Get": "Parameters.Threshold"},
                                        ],
                                    }
                                }
                            },
                        }
                    ],
                },
            },
        ],
    }


@pytest.fixture
def runner(local_config):
    return LocalRunner(build_resources(local_config))


def test_steps_pass_data_through_the_store_and_conditions_pick_a_branch(runner):
    execution = runner.run(definition())
    assert execution.status == "Succeeded", [s.failure_reason for s in execution.steps]
    statuses = {s.name: s.status for s in execution.steps}
    assert statuses == {
        "Produce": "Succeeded",
        "Consume": "Succeeded",
        "Check": "Succeeded",
        "TooLow": "NotExecuted",
    }
    report = execution.property_files["Produce"]["Report"]
    assert report == {
        "metrics": {"score": 0.9},
        "host": "algo-1",
        "env": "from-definition",
    }
    uri = execution.properties["Produce"]["ProcessingOutputConfig"]["Outputs"][0][
        "S3Output"
    ]["S3Uri"]
    assert uri == f"s3://mlops-local/t/{execution.execution_id}/report"
    record = json.loads(
        (
            runner.resources.config.state_dir
            / "executions"
            / execution.execution_id
            / "execution.json"
        ).read_text()
    )
    assert record["status"] == "Succeeded"


def test_a_fail_step_fails_the_execution_with_its_message(runner):
    execution = runner.run(definition(), {"Score": "0.2"})
    assert execution.status == "Failed"
    assert execution.failed_step.name == "TooLow"
    assert execution.failed_step.failure_reason == "score 0.2 below 0.5"


def test_a_failing_job_reports_its_message_and_stops_the_pipeline(runner):
    execution = runner.run(definition(fail_second=True))
    assert execution.failed_step.name == "Consume"
    assert execution.failed_step.failure_reason == "the data was bad"
    (log,) = execution.failed_step.logs
    assert log.endswith("steps/Consume/algo-1/job.log")
    assert execution.step("Check").status == "NotExecuted"


def test_instance_count_runs_one_worker_per_instance(runner):
    step = processing(
        "Produce", WRITE_REPORT, args=["0.5"], outputs=[report_output()], instances=3
    )
    execution = runner.run({"Version": "2020-12-01", "Parameters": [], "Steps": [step]})
    assert execution.status == "Succeeded"
    hosts = sorted(
        p.parent.name
        for p in (runner.resources.config.state_dir / "executions").rglob("job.log")
    )
    assert hosts == ["algo-1", "algo-2", "algo-3"]


def test_parameters_are_typed_and_unknown_ones_refused():
    spec = definition()
    assert bind_parameters(spec, {"Score": "0.3"}) == {"Score": 0.3, "Threshold": 0.5}
    with pytest.raises(DefinitionError, match="unknown parameter"):
        bind_parameters(spec, {"Scor": "1"})
    with pytest.raises(DefinitionError, match="not a valid Float"):
        bind_parameters(spec, {"Score": "high"})
    flag = {"Parameters": [{"Name": "On", "Type": "Boolean", "DefaultValue": False}]}
    assert bind_parameters(flag, {}) == {"On": False}
    assert bind_parameters(flag, {"On": "TRUE"}) == {"On": True}
    assert bind_parameters(flag, {"On": "false"}) == {"On": False}
    with pytest.raises(DefinitionError, match="On='yes please' is not a valid Boolean"):
        bind_parameters(flag, {"On": "yes please"})


def test_cycles_and_unknown_steps_are_refused():
    looped = {
        "Steps": [
            {"Name": "A", "Type": "Fail", "DependsOn": ["B"], "Arguments": {}},
            {"Name": "B", "Type": "Fail", "DependsOn": ["A"], "Arguments": {}},
        ]
    }
    with pytest.raises(DefinitionError, match="cycle"):
        flatten_steps(looped)
    with pytest.raises(DefinitionError, match="unknown step"):
        flatten_steps({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["Z"]}]})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"Type": "GreaterThanOrEqualTo", "LeftValue": 0.7, "RightValue": 0.7}, True),
        ({"Type": "GreaterThan", "LeftValue": "0.7", "RightValue": 0.7}, False),
        ({"Type": "LessThan", "LeftValue": 1, "RightValue": 2}, True),
        ({"Type": "Equals", "LeftValue": "Approved", "RightValue": "Approved"}, True),
        ({"Type": "In", "QueryValue": "a", "Values": ["b", "c"]}, False),
        (
            {
                "Type": "Not",
                "Expression": {"Type": "Equals", "LeftValue": 1, "RightValue": 2},
            },
            True,
        ),
        (
            {
                "Type": "Or",
                "Conditions": [
                    {"Type": "Equals", "LeftValue": 1, "RightValue": 2},
                    {"Type": "Equals", "LeftValue": 2, "RightValue": 2},
                ],
            },
            True,
        ),
    ],
)
def test_condition_types(condition, expected):
    assert evaluate_condition(condition) is expected


SLEEP = "import time; time.sleep(60)"


def test_an_interrupted_run_stops_its_jobs_and_records_it(local_config):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import PROJECT_ROOT

    script = (
        "import json, sys\n"
        "from pipelines.local_runner import LocalRunner\n"
        "from stack.config import load_config\n"
        "from stack.resources import build_resources\n"
        "config = load_config('local', {'state_dir': sys.argv[1]}, environ={})\n"
        "definition = json.loads(sys.argv[2])\n"
        "try:\n"
        "    LocalRunner(build_resources(config)).run(definition)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    definition = {"Parameters": [], "Steps": [processing("Sleep", SLEEP)]}
    state = local_config.state_dir
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(state), json.dumps(definition)],
        cwd=PROJECT_ROOT,
    )
    deadline = time.monotonic() + 60
    while not list(state.glob("executions/*/steps/Sleep/algo-1/job.log")):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 130
    (record_path,) = state.glob("executions/*/execution.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "Stopped"
    assert record["steps"][0]["status"] == "Stopped"
    assert not [
        c for c in _command_lines() if b"time.sleep(60)" in c and b"sys.argv" not in c
    ]


def _command_lines() -> list[bytes]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # the process ended while we looked
            lines.append(path.read_bytes())
    return lines


def cached(step, expire="P1D"):
    return {**step, "CacheConfig": {"Enabled": True, "ExpireAfter": expire}}


def produce_and_consume(expire="P1D"):
    spec = definition()
    spec["Steps"][0] = cached(spec["Steps"][0], expire)
    spec["Steps"][1] = cached(spec["Steps"][1], expire)
    return spec


def test_a_rerun_with_the_same_arguments_reuses_cached_steps(runner):
    first = runner.run(produce_and_consume())
    second = runner.run(produce_and_consume())
    assert second.status == "Succeeded"
    assert second.step("Produce").cached_from == first.execution_id
    # Consume's input is Produce's output: reused, so it resolves the same and hits
    assert second.step("Consume").cached_from == first.execution_id
    assert second.step("Check").cached_from is None  # conditions are not cached
    assert second.properties["Produce"] == first.properties["Produce"]
    assert second.property_files["Produce"] == first.property_files["Produce"]
    # no job ran the second time
    steps_dir = Path(second.directory) / "steps"
    assert not list(steps_dir.rglob("job.log"))


def test_a_changed_argument_misses_the_cache(runner):
    runner.run(produce_and_consume())
    second = runner.run(produce_and_consume(), {"Score": "0.8"})
    assert second.step("Produce").cached_from is None
    assert second.property_files["Produce"]["Report"]["metrics"]["score"] == 0.8
    assert second.step("Consume").cached_from is None  # a new input


def test_expired_or_vanished_entries_are_not_used(runner):
    from datetime import UTC, datetime, timedelta

    from pipelines.step_cache import StepCache

    first = runner.run(produce_and_consume(expire="PT1H"))
    spec = produce_and_consume(expire="PT1H")
    produce = spec["Steps"][0]
    (entry,) = (runner.cache.root / first.pipeline_name / "Produce").glob("*.json")
    key = entry.stem
    later = datetime.now(UTC) + timedelta(hours=2)
    assert runner.cache.lookup(first.pipeline_name, produce, key) is not None
    assert runner.cache.lookup(first.pipeline_name, produce, key, now=later) is None
    # the outputs it points at are gone: the step runs again
    output = first.properties["Produce"]["ProcessingOutputConfig"]["Outputs"][0]
    for uri in runner.resources.store.list(output["S3Output"]["S3Uri"]):
        runner.resources.store.path_of(uri).unlink()
    assert runner.cache.lookup(first.pipeline_name, produce, key) is None
    assert (
        StepCache.applies_to({"Type": "Condition", "CacheConfig": {"Enabled": True}})
        is False
    )


RENDEZVOUS = (
    "import os, pathlib, sys, time; "
    "here = pathlib.Path(sys.argv[1]); here.mkdir(parents=True, exist_ok=True); "
    "(here / sys.argv[2]).touch(); "
    "deadline = time.monotonic() + 60; "
    "other = here / sys.argv[3]\n"
    "while not other.exists():\n"
    "    time.sleep(0.05)\n"
    "    time.monotonic() < deadline or sys.exit('the other step never ran alongside')"
)


def test_independent_steps_run_at_the_same_time(runner):
    # each step waits for the other to have started: run one after the other, both fail
    # (they meet in the state folder: the one folder of this machine jobs share)
    meeting = str(runner.state_dir / "meeting")
    spec = {
        "Version": "2020-12-01",
        "Parameters": [],
        "Steps": [
            processing("Left", RENDEZVOUS, args=[meeting, "left", "right"]),
            processing("Right", RENDEZVOUS, args=[meeting, "right", "left"]),
        ],
    }
    execution = runner.run(spec)
    assert execution.status == "Succeeded", [s.failure_reason for s in execution.steps]


FAIL_UNLESS_FLAG = (
    "import pathlib, sys; "
    "pathlib.Path(sys.argv[1]).exists() or sys.exit('flag missing')"
)


def test_a_failed_execution_is_retried_from_the_failed_step(runner):
    from pipelines.local_runner import Execution

    flag = runner.state_dir / "flag"  # a folder the job sees
    spec = definition()
    spec["Steps"][1] = processing(
        "Consume",
        FAIL_UNLESS_FLAG,
        args=[str(flag)],
        inputs=spec["Steps"][1]["Arguments"]["ProcessingInputs"],
    )
    failed = runner.run(spec)
    assert failed.status == "Failed" and failed.failed_step.name == "Consume"
    produce_log = next(Path(failed.directory).glob("steps/Produce/*/job.log"))
    produce_log.write_text("first run\n")
    flag.touch()
    retried = runner.retry(failed.execution_id)
    assert retried.execution_id == failed.execution_id
    assert retried.status == "Succeeded"
    assert retried.attempts == 2
    assert produce_log.read_text() == "first run\n"  # Produce did not run again
    assert Execution.load(Path(failed.directory)).status == "Succeeded"
    with pytest.raises(DefinitionError, match="only a Failed or Stopped"):
        runner.retry(failed.execution_id)
    with pytest.raises(DefinitionError, match="no execution nope"):
        runner.retry("nope")


def test_the_executions_command_lists_describes_and_retries(local_config, capsys):
    from pipelines import executions

    runner = LocalRunner(build_resources(local_config))
    failed = runner.run(definition(fail_second=True))
    state = ["--state-dir", str(local_config.state_dir)]

    def cli(*args):
        code = executions.main([*state, *args])
        return code, capsys.readouterr().out

    code, out = cli("list")
    assert code == 0 and out.startswith(f"{failed.execution_id}  Failed")
    code, out = cli("describe", failed.execution_id)
    assert code == 0
    assert "  Consume         Failed" in out and "the data was bad" in out
    assert "  Check           NotExecuted" in out
    code, out = cli("retry", failed.execution_id)  # the job fails the same way again
    assert code == 1 and "attempt 2" in out
    assert executions.main([*state, "describe", "nope"]) == 2
    assert "no execution nope" in capsys.readouterr().err


RUNNER_SCRIPT = (
    "import json, sys\n"
    "from pipelines.local_runner import LocalRunner\n"
    "from stack.config import load_config\n"
    "from stack.resources import build_resources\n"
    "config = load_config('local', {'state_dir': sys.argv[1]}, environ={})\n"
    "LocalRunner(build_resources(config)).run(json.loads(sys.argv[2]))\n"
)


def test_a_runner_killed_mid_step_leaves_a_failed_execution_that_retries(
    local_config,
):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipelines.local_runner import Execution
    from tests.conftest import PROJECT_ROOT

    state = local_config.state_dir
    flag = state / "flag"
    spec = definition()
    # Consume sleeps until it is killed with its runner; the retry finds the flag
    sleep_unless_flag = (
        "import pathlib, sys, time\n"
        "if not pathlib.Path(sys.argv[1]).exists(): time.sleep(60)\n"
    )
    spec["Steps"][1] = processing(
        "Consume",
        sleep_unless_flag,
        args=[str(flag)],
        inputs=spec["Steps"][1]["Arguments"]["ProcessingInputs"],
    )
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, str(state), json.dumps(spec)],
        cwd=PROJECT_ROOT,
    )
    deadline = time.monotonic() + 90
    while not list(state.glob("executions/*/steps/Consume/algo-1/job.log")):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(0.5)
    # its job died with it
    assert not [c for c in _command_lines() if b"time.sleep(60)" in c]
    (directory,) = [p.parent for p in state.glob("executions/*/execution.json")]
    died = Execution.load(directory)
    assert died.status == "Failed"
    assert died.failed_step.name == "Consume"
    assert died.failed_step.failure_reason.startswith("runner died (pid ")
    assert died.step("Produce").status == "Succeeded"
    flag.touch()
    runner = LocalRunner(build_resources(local_config))
    retried = runner.retry(died.execution_id)
    assert retried.status == "Succeeded" and retried.attempts == 2


def test_a_second_runner_on_the_same_state_is_refused(runner):
    from pipelines.local_runner import StateBusy

    other = LocalRunner(runner.resources)
    busy = pytest.raises(StateBusy, match=r"pid \d+ is executing a pipeline in")
    with runner.exclusive(), runner.exclusive(), busy:  # re-entrant for its holder
        other.run(definition())
    assert other.run(definition()).status == "Succeeded"  # free once released
