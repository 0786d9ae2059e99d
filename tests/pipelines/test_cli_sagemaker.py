"""The CLIs against a SageMaker API (moto, in-process), every flag and exit code.

moto 5.2 has no ListPipelineExecutionSteps and no RetryPipelineExecution, and its
executions succeed at once. Only those calls (and DescribePipelineExecution, to play a
running or failed execution) are answered by a stub at botocore's boundary (a
before-call hook on the client); everything else is moto.
"""

import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from pipelines import executions, run, run_pipeline
from pipelines.definition import build_definition
from stack import resources
from stack.config import load_config

ROLE = "arn:aws:iam::000000000000:role/mlops-dev"
PIPELINE = "churn-pipeline-dev"
STEPS = ["Extract", "Train", "Evaluate", "CheckAuc", "Register"]


class SageMakerStub:
    """What the stubbed calls answer; tests change it to play a scenario."""

    def __init__(self):
        self.statuses = ["Succeeded"]  # DescribePipelineExecution, one per call
        self.steps = [{"StepName": s, "StepStatus": "Succeeded"} for s in STEPS]
        self.calls = []

    def install(self, client):
        requested = {}

        def remember(params, model, **_):  # the API parameters, before serialising
            requested[model.name] = dict(params)

        def answer(model, **_):
            name = model.name
            params = requested.pop(name, {})
            self.calls.append((name, params))
            ok = SimpleNamespace(status_code=200, headers={})
            if name == "ListPipelineExecutionSteps":
                return ok, {"PipelineExecutionSteps": self.steps}
            if name == "RetryPipelineExecution":
                return ok, {"PipelineExecutionArn": params["PipelineExecutionArn"]}
            if name == "DescribePipelineExecution" and self.statuses:
                status = (
                    self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
                )
                return ok, {
                    "PipelineExecutionArn": params["PipelineExecutionArn"],
                    "PipelineExecutionStatus": status,
                    "CreationTime": datetime(2026, 11, 24, tzinfo=UTC),
                }
            return None  # moto answers

        client.meta.events.register("before-parameter-build.sagemaker.*", remember)
        client.meta.events.register("before-call.sagemaker.*", answer)
        return client


@pytest.fixture
def sagemaker(aws_credentials, monkeypatch):
    """moto's SageMaker, with the stub on the client of every pipeline service the
    CLIs get from the resources.
    """
    stub = SageMakerStub()
    with mock_aws():
        build = resources.build_pipelines

        def with_stub(config):
            service = build(config)
            stub.install(service.client)
            return service

        monkeypatch.setattr(resources, "build_pipelines", with_stub)
        stub.client = boto3.client("sagemaker", region_name="us-east-1")
        yield stub


def cli(capsys, *args, main=run.main):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def upsert(capsys, *args):
    return cli(capsys, "--env", "dev", "--role-arn", ROLE, "--upsert", *args)


def test_upsert_creates_then_updates_with_description_tags_and_display_name(
    sagemaker, capsys
):
    code, out, _ = upsert(
        capsys,
        "--description",
        "nightly churn",
        "--tags",
        "team=ml,cost=42",
        "--display-name",
        "Churn-Dev",
    )
    assert code == 0 and out.startswith("Created pipeline arn:aws:sagemaker:")
    image = "000000000000.dkr.ecr.us-east-1.amazonaws.com/mlops:2"
    code, out, _ = upsert(
        capsys,
        "--tags",
        "owner=data-eng",
        "--bucket",
        "team-bucket",
        "--image-uri",
        image,
        "--region",
        "us-east-1",
    )
    assert code == 0 and out.startswith("Updated pipeline")
    client = sagemaker.client
    described = client.describe_pipeline(PipelineName=PIPELINE)
    assert described["PipelineDisplayName"] == "Churn-Dev"
    arn = described["PipelineArn"]
    tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=arn)["Tags"]}
    assert tags == {
        "environment": "dev",
        "team": "ml",
        "cost": "42",
        "owner": "data-eng",
    }
    definition = json.loads(described["PipelineDefinition"])
    overrides = {
        "aws.role_arn": ROLE,
        "aws.bucket": "team-bucket",
        "sagemaker.image_uri": image,
    }
    assert definition == build_definition(load_config("dev", overrides))
    assert "s3://team-bucket/" in described["PipelineDefinition"]


def test_start_passes_typed_parameters(sagemaker, capsys):
    code, out, _ = upsert(
        capsys,
        "--start",
        "--param",
        "AucThreshold=0.8",
        "--param",
        "AsOfDate=2026-06-30",
    )
    assert code == 0
    execution_arn = out.splitlines()[-1].removeprefix("started execution ")
    given = sagemaker.client.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution_arn
    )["PipelineParameters"]
    values = {p["Name"]: p["Value"] for p in given}
    # the code's commit is passed with every start (see pipelines.operations.git_commit)
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", values.pop("GitCommit"))
    assert values == {"AucThreshold": "0.8", "AsOfDate": "2026-06-30"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "AucThreshold=high"], "AucThreshold='high' is not a valid Float"),
        (["--param", "Nope=1"], "unknown parameter(s) Nope"),
        (["--tags", "team"], "--tags expects KEY=VALUE"),
        (["--tags", "aws:owner=me"], "not starting with aws:"),
        (["--display-name", "has spaces"], "--display-name takes"),
    ],
)
def test_bad_flags_exit_2_before_any_call(sagemaker, capsys, args, message):
    code, out, err = upsert(capsys, "--start", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err
    assert sagemaker.client.list_pipelines()["PipelineSummaries"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--description", "x"], "--description only apply with --upsert"),
        (["--tags", "a=b"], "--tags only apply with --upsert"),
        (["--definition", "--upsert"], "--definition prints the definition"),
    ],
)
def test_flags_that_need_upsert_are_refused_alone(capsys, args, message):
    code, _, err = cli(capsys, *args)
    assert code == 2 and message in err


def test_wait_shows_steps_and_exits_0_when_the_execution_succeeds(sagemaker, capsys):
    sagemaker.statuses = ["Executing", "Succeeded"]
    sagemaker.steps[0]["CacheHitResult"] = {
        "SourcePipelineExecutionArn": "arn:aws:sagemaker:us-east-1:0:pipeline/p/execution/old"
    }
    code, out, err = upsert(capsys, "--wait", "--poll-interval", "0.01")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[-1] == "Succeeded"
    assert any(
        line.startswith("  Extract         Succeeded") and "cached from" in line
        for line in lines
    )
    assert any(line.startswith("  Register        Succeeded") for line in lines)
    polls = [c for c in sagemaker.calls if c[0] == "DescribePipelineExecution"]
    assert len(polls) == 2


def test_wait_exits_1_naming_the_failed_step(sagemaker, capsys):
    sagemaker.statuses = ["Failed"]
    sagemaker.steps[1] = {
        "StepName": "Train",
        "StepStatus": "Failed",
        "FailureReason": "ClientError: AlgorithmError: out of memory",
    }
    code, out, _ = upsert(capsys, "--wait", "--poll-interval", "0.01")
    assert code == 1
    assert out.splitlines()[-1] == (
        "Failed: step Train: ClientError: AlgorithmError: out of memory"
    )


def test_wait_gives_up_after_the_timeout_with_exit_1(sagemaker, capsys):
    sagemaker.statuses = ["Executing"]
    code, _, err = upsert(
        capsys, "--wait", "--wait-timeout", "0.05", "--poll-interval", "0.01"
    )
    assert code == 1
    assert "still Executing after" in err and "goes on in SageMaker" in err


def test_json_log_format_prints_one_object_per_line(sagemaker, capsys):
    code, out, _ = upsert(
        capsys, "--wait", "--poll-interval", "0.01", "--log-format", "json"
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records][:2] == ["upserted", "started"]
    assert records[-1]["event"] == "execution" and records[-1]["status"] == "Succeeded"
    assert {r["step"] for r in records if r["event"] == "step_result"} == set(STEPS)
    code, out, err = cli(capsys, "--env", "qa", "--log-format", "json")
    assert code == 2 and out == ""
    error = json.loads(err)
    assert error["event"] == "error" and error["exit_code"] == 2


def test_no_credentials_is_a_configuration_error(monkeypatch, capsys):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, _, err = upsert(capsys)
    assert code == 2 and "no AWS credentials found" in err


def test_run_pipeline_takes_the_templates_flags(sagemaker, capsys):
    kwargs = {
        "region": "us-east-1",
        "role": ROLE,
        "default_bucket": "team-artifacts",
        "pipeline_name": "churn-proj-p-abc123",
        "model_package_group_name": "churn-proj-p-abc123",
        "sagemaker_project_arn": "ignored",
    }
    tags = [{"Key": "sagemaker:project-name", "Value": "churn-proj"}]
    code, out, _ = cli(
        capsys,
        "--module-name",
        "pipelines.definition",
        "--role-arn",
        ROLE,
        "--kwargs",
        json.dumps(kwargs),
        "--tags",
        json.dumps(tags),
        "--description",
        "from CodeBuild",
        main=run_pipeline.run_pipeline,
    )
    assert code == 0, out
    assert out.splitlines()[-1] == "Succeeded"
    described = sagemaker.client.describe_pipeline(PipelineName="churn-proj-p-abc123")
    assert described["PipelineDescription"] == "from CodeBuild"
    definition = described["PipelineDefinition"]
    assert "s3://team-artifacts/" in definition
    assert '"ModelPackageGroupName": "churn-proj-p-abc123"' in definition
    tagged = sagemaker.client.list_tags(ResourceArn=described["PipelineArn"])["Tags"]
    assert {"Key": "sagemaker:project-name", "Value": "churn-proj"} in tagged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--module-name", "pipelines.abalone.pipeline"], "this project's pipeline is"),
        (["--kwargs", "{not json"], "--kwargs is not JSON"),
        (["--kwargs", '{"colour": "red"}'], "unknown key(s) colour"),
        (["--tags", '{"Key": 1}'], "--tags must be a JSON list"),
    ],
)
def test_run_pipeline_refuses_bad_flags_with_exit_2(sagemaker, capsys, args, message):
    base = {"--module-name": "pipelines.definition", "--role-arn": ROLE}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [part for pair in base.items() for part in pair]
    code, _, err = cli(capsys, *argv, main=run_pipeline.run_pipeline)
    assert code == 2 and message in err


def test_get_pipeline_definition_writes_the_definition(tmp_path, capsys):
    target = tmp_path / "pipeline.json"
    kwargs = json.dumps({"role": ROLE, "default_bucket": "team-artifacts"})
    code, _, _ = cli(
        capsys,
        "-n",
        "pipelines.definition",
        "-kwargs",
        kwargs,
        "-f",
        str(target),
        main=run_pipeline.get_pipeline_definition,
    )
    assert code == 0
    expected = build_definition(
        load_config("dev", {"aws.role_arn": ROLE, "aws.bucket": "team-artifacts"})
    )
    assert json.loads(target.read_text()) == expected


def test_executions_on_sagemaker_list_describe_and_retry(sagemaker, capsys):
    code, out, _ = upsert(capsys, "--start")
    arn = out.splitlines()[-1].removeprefix("started execution ")
    sagemaker.steps[2] = {
        "StepName": "Evaluate",
        "StepStatus": "Failed",
        "FailureReason": "exited with code 1",
        "StartTime": datetime(2026, 11, 24, 1, 0, tzinfo=UTC),
        "EndTime": datetime(2026, 11, 24, 1, 2, tzinfo=UTC),
    }
    dev = ["--env", "dev"]
    sagemaker.statuses = ["Failed"]
    code, out, _ = cli(capsys, *dev, "list", main=executions.main)
    assert code == 0 and out.startswith(arn)
    # from its creation (2026-11-24T00:00Z) to its last step's end (01:02)
    assert "  Failed      " in out and "3720.0s  failed at Evaluate" in out
    code, out, _ = cli(capsys, *dev, "describe", arn, main=executions.main)
    assert code == 0
    assert "  Evaluate        Failed         120.0s  exited with code 1" in out
    sagemaker.statuses = ["Failed"]  # the retry fails again
    code, out, _ = cli(capsys, *dev, "retry", arn, "--wait", main=executions.main)
    assert code == 1 and out.startswith(f"retried execution {arn}")
    retried = [c for c in sagemaker.calls if c[0] == "RetryPipelineExecution"]
    assert retried[0][1]["PipelineExecutionArn"] == arn
