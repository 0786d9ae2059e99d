import json

import boto3
import pytest
from moto import mock_aws

from pipelines.console import Console
from pipelines.definition import build_definition
from pipelines.upsert import UpsertRequest, upsert_and_report
from stack.config import ConfigError, load_config
from tests.conftest import run_cli

ROLE = "arn:aws:iam::000000000000:role/mlops-dev"


def dev_config(**extra):
    return load_config("dev", environ={"MLOPS_AWS__ROLE_ARN": ROLE, **extra})


def test_upsert_twice_creates_then_updates_with_the_definition_the_runner_executes(
    aws_credentials, capsys
):
    config = dev_config(
        MLOPS_SNOWFLAKE__PASSWORD="pw-sentinel-77",
        MLOPS_SNOWFLAKE__SECRET_ARN=(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:snowflake"
        ),
    )
    console = Console()
    with mock_aws():  # the resources' SageMaker client is moto's
        client = boto3.client("sagemaker", region_name="us-east-1")
        assert upsert_and_report(config, console, UpsertRequest()) == 0
        request = UpsertRequest(parameters={"AucThreshold": "0.75"}, start=True)
        assert upsert_and_report(config, console, request) == 0
        first, second, started = capsys.readouterr().out.splitlines()
        stored = client.describe_pipeline(PipelineName="churn-pipeline-dev")
        arn = stored["PipelineArn"]
        assert first == f"Created pipeline {arn}"
        assert second == f"Updated pipeline {arn}"
        assert started.startswith(f"started execution {arn}/execution/")
    assert json.loads(stored["PipelineDefinition"]) == build_definition(config)
    assert stored["RoleArn"] == ROLE
    assert "pw-sentinel-77" not in stored["PipelineDefinition"]


def test_unknown_parameters_fail_before_any_aws_call(aws_credentials):
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        request = UpsertRequest(parameters={"AucTreshold": "0.8"}, start=True)
        with pytest.raises(ConfigError, match="unknown parameter"):
            upsert_and_report(dev_config(), Console(), request)
        assert client.list_pipelines()["PipelineSummaries"] == []


def test_the_cli_upserts_to_a_sagemaker_api(moto_server):
    env = {
        "MLOPS_AWS__ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    first = run_cli(
        "--env", "dev", "--upsert", "--role-arn", ROLE, env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Created pipeline arn:aws:sagemaker:")
    second = run_cli(
        "--env",
        "dev",
        "--upsert",
        "--start",
        "--role-arn",
        ROLE,
        "--param",
        "AucThreshold=0.8",
        env=env,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert "Updated pipeline" in second.stdout and "started execution" in second.stdout
