"""The monitoring pipeline's definition: its shape, that SageMaker's API model and the
local runner accept it, the local runner taking each branch, and its upsert.
"""

import copy
import json
import os
import re

import pytest

from monitoring import check as drift_check
from monitoring import pipeline
from monitoring.pipeline import build_monitor_definition
from pipelines.local_runner import LocalRunner, flatten_steps
from pipelines.remote import SageMakerPipelines
from pipelines.step_names import CHECK_DRIFT, DRIFT_CHECK, RETRAIN
from pipelines.validation import definition_problems
from stack.config import job_environment, load_config
from stack.registry import LocalModelRegistry
from stack.resources import build_resources

ROLE = "arn:aws:iam::000000000000:role/mlops-dev"


@pytest.fixture(scope="module")
def definition(tmp_path_factory):
    config = load_config(
        "local", {"state_dir": str(tmp_path_factory.mktemp("def"))}, environ={}
    )
    return build_monitor_definition(config)


def steps_by_name(definition):
    return {s.name: s for s in flatten_steps(definition)}


def test_drift_check_then_a_condition_then_retrain(definition):
    assert [p["Name"] for p in definition["Parameters"]] == ["ForceRetrain"]
    assert definition["Parameters"][0] == {
        "Name": "ForceRetrain",
        "Type": "Boolean",
        "DefaultValue": False,
    }
    steps = steps_by_name(definition)
    assert list(steps) == [DRIFT_CHECK, CHECK_DRIFT, RETRAIN]
    assert steps[RETRAIN].branch == (CHECK_DRIFT, True)
    assert steps[RETRAIN].depends_on == {CHECK_DRIFT, DRIFT_CHECK}

    check = steps[DRIFT_CHECK].definition
    app = check["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["python", "-m", "monitoring", "check"]
    assert app["ContainerArguments"][:2] == [
        "--output-dir",
        drift_check.PIPELINE_OUTPUT,
    ]
    assert check["PropertyFiles"] == [
        {
            "PropertyFileName": "DriftReport",
            "OutputName": "monitoring",
            "FilePath": "drift.json",
        }
    ]
    (condition,) = steps[CHECK_DRIFT].definition["Arguments"]["Conditions"]
    assert condition["Type"] == "Or"
    greater, force = condition["Conditions"]
    assert greater["Type"] == "GreaterThan" and greater["RightValue"] == 0
    assert greater["LeftValue"]["Std:JsonGet"]["Path"] == "violations"
    assert force["LeftValue"] == {"Get": "Parameters.ForceRetrain"}

    retrain = steps[RETRAIN].definition["Arguments"]
    assert retrain["AppSpecification"]["ContainerEntrypoint"][-1] == "retrain"
    assert "--start" in retrain["AppSpecification"]["ContainerArguments"]
    (drift_input,) = retrain["ProcessingInputs"]
    assert drift_input["S3Input"]["S3Uri"] == {
        "Get": "Steps.DriftCheck.ProcessingOutputConfig.Outputs['monitoring']"
        ".S3Output.S3Uri"
    }


def test_the_definition_is_valid_json_sagemaker_s_api_model_accepts(definition):
    assert definition_problems(json.loads(json.dumps(definition))) == []


def test_it_is_named_after_the_training_pipeline():
    config = load_config("dev", {"aws.role_arn": ROLE}, environ={})
    assert pipeline.monitor_pipeline_name(config) == "churn-pipeline-dev-monitor"


# --- the local runner takes each branch -----------------------------------------------

# Stands in for `monitoring check`: writes a drift.json with as many violations as its
# first argument, where the definition's --output-dir says (under the contract).
FAKE_CHECK = """
import json, os, sys
from pathlib import Path
args = sys.argv[2:]
out = args[args.index("--output-dir") + 1].removeprefix("/opt/ml/")
report = {"checked_at": "2026-07-02T09:00:00Z", "violations": int(sys.argv[1])}
(Path(os.environ["OPT_ML_ROOT"]) / out / "drift.json").write_text(json.dumps(report))
"""


@pytest.fixture
def runner(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    config = load_config("local", {"state_dir": str(tmp_path / "state")}, environ={})
    LocalModelRegistry(config.state_dir / "registry", "us-east-1").register(
        {
            "ModelPackageGroupName": "churn-models",
            "ModelApprovalStatus": "Approved",
            "InferenceSpecification": {"Containers": [{"Image": "img"}]},
            "CustomerMetadataProperties": {"as_of_date": "2026-03-31"},
        }
    )
    return LocalRunner(build_resources(config))


def with_fake_check(definition, violations):
    """The definition with DriftCheck replaced by FAKE_CHECK; Retrain runs as defined
    (``python -m monitoring retrain --start --drift-report ...``).
    """
    fake = copy.deepcopy(definition)
    steps = steps_by_name(fake)
    app = steps[DRIFT_CHECK].definition["Arguments"]["AppSpecification"]
    app["ContainerEntrypoint"] = ["python", "-c", FAKE_CHECK, str(violations)]
    return fake


def job_log(execution, step):
    (log,) = execution.step(step).logs
    with open(log) as handle:
        return handle.read()


@pytest.mark.parametrize(
    ("violations", "force", "retrain_runs"),
    [(2, "false", True), (0, "false", False), (0, "true", True)],
)
def test_the_local_runner_runs_retrain_on_violations_or_when_forced(
    definition, runner, violations, force, retrain_runs
):
    execution = runner.run(
        with_fake_check(definition, violations),
        {"ForceRetrain": force},
        pipeline_name="churn-pipeline-monitor",
    )
    assert execution.status == "Succeeded", [
        (s.name, s.failure_reason) for s in execution.steps
    ]
    report = execution.property_files[DRIFT_CHECK]["DriftReport"]
    assert report["violations"] == violations
    assert execution.step(CHECK_DRIFT).outcome == str(retrain_runs).lower()
    retrain = execution.step(RETRAIN)
    assert retrain.status == ("Succeeded" if retrain_runs else "NotExecuted")
    if retrain_runs:
        # the real retrain command read this execution's report, staged as its input;
        # the check predates version 1's registration, so it started nothing
        log = job_log(execution, RETRAIN)
        assert f", {violations} violation(s))" in log
        assert "opt/ml/processing/drift/drift.json" in log
        assert "No retraining" in log
        assert len(list((runner.state_dir / "executions").iterdir())) == 1


def test_the_command_runs_it_locally(definition, runner, capsys, monkeypatch):
    monkeypatch.setattr(
        pipeline,
        "build_monitor_definition",
        lambda config: with_fake_check(definition, 0),
    )
    state = str(runner.state_dir)
    assert pipeline.main(["--run", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert "Drift check: 0 violation(s)" in out
    assert re.search(r"Retrain +NotExecuted", out)
    assert out.strip().endswith("Succeeded")
    assert pipeline.main(["--run", "--force-retrain", "--state-dir", state]) == 0
    assert re.search(r"Retrain +Succeeded", capsys.readouterr().out)
    assert pipeline.main(["--force-retrain"]) == 2
    assert "--force-retrain goes with --run" in capsys.readouterr().err


# --- the command ------------------------------------------------------------------------


def test_the_command_prints_or_writes_the_definition(tmp_path, capsys, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    target = tmp_path / "monitor.json"
    assert pipeline.main(["--definition", str(target)]) == 0
    written = json.loads(target.read_text())
    assert [s["Name"] for s in written["Steps"]] == [DRIFT_CHECK, CHECK_DRIFT]
    assert pipeline.main(["--upsert"]) == 2
    assert "--upsert needs an AWS environment" in capsys.readouterr().err


def test_upsert_creates_then_updates_the_monitor_pipeline(
    aws_credentials, capsys, monkeypatch
):
    from moto import mock_aws

    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    with mock_aws():
        import boto3

        assert pipeline.main(["--env", "dev", "--upsert"]) == 2
        assert "aws.role_arn is not set" in capsys.readouterr().err
        args = ["--env", "dev", "--upsert", "--role-arn", ROLE]
        assert pipeline.main(args) == 0
        assert capsys.readouterr().out.startswith("Created pipeline arn:aws:sagemaker:")
        client = boto3.client("sagemaker", region_name="us-east-1")
        described = client.describe_pipeline(PipelineName="churn-pipeline-dev-monitor")
        body = json.loads(described["PipelineDefinition"])
        assert [p["Name"] for p in body["Parameters"]] == ["ForceRetrain"]
        config = load_config("dev", {"aws.role_arn": ROLE}, environ={})
        # the job's configuration travels in its request (it reads no conf files)
        environment = body["Steps"][0]["Arguments"]["Environment"]
        assert environment == job_environment(config, drift_check.SPEC.sections)
        assert environment["MLOPS_RESOURCES__REGISTRY"] == "sagemaker"
        assert body["Steps"][0]["Arguments"]["RoleArn"] == ROLE
        service = SageMakerPipelines(client, "churn-pipeline-dev")
        action, arn = pipeline.upsert_monitor_pipeline(config, service, body)
        assert (action, arn) == ("Updated", described["PipelineArn"])
