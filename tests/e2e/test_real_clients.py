"""The loop through the clients production uses: boto3 against moto's server (S3, the
SageMaker model registry, Secrets Manager) and the Snowflake connector against a
fakesnow server. The Extract job finds its Snowflake settings in its definition and
reads the password from the secret the definition names, as it would on SageMaker.

WriteBack runs too, through the connector: fakesnow's server cannot run
``write_pandas`` (its PUT and COPY INTO), so the connector warehouse stages the
scores with bound multi-row INSERTs there (``Warehouse.bulk_load`` false), then
merges them as on the embedded Snowflake.
"""

import json
import subprocess
import sys

import boto3
import pytest

from tests.conftest import (
    PROJECT_ROOT,
    SMALL_CUSTOMERS,
    connect_to_fakesnow_server,
    free_port,
    run_cli,
)

pytestmark = pytest.mark.e2e
SNOWFLAKE_LOGIN = {"user": "fake", "password": "fake-password-in-moto"}


def test_the_loop_with_moto_and_a_fakesnow_server(
    moto_server, fakesnow_server, tmp_path
):
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def client(service):
        return boto3.client(
            service,
            endpoint_url=moto_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    s3 = client("s3")
    s3.create_bucket(Bucket="mlops-test")  # the artifacts bucket exists before a deploy
    secret = client("secretsmanager").create_secret(
        Name="snowflake-mlops", SecretString=json.dumps(SNOWFLAKE_LOGIN)
    )
    state = tmp_path / "state"
    env = {
        **aws,
        "MLOPS_AWS__ENDPOINT_URL": moto_server,
        "MLOPS_SNOWFLAKE__PORT": str(fakesnow_server),
        "MLOPS_SNOWFLAKE__SECRET_ARN": secret["ARN"],
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_LOCAL_ENDPOINT__PORT": str(free_port()),
        "MLOPS_DEMO__CUSTOMERS": str(SMALL_CUSTOMERS),
    }
    try:
        result = run_cli("--env", "test", "--param", "WriteBack=true", env=env)
    finally:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.endpoint",
                "stop",
                "--env",
                "test",
                "--state-dir",
                str(state),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            timeout=60,
            env={**env},
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("Succeeded")

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlops-test")["Contents"]]
    for expected in (
        "/features/train/part-algo-1.parquet",
        "/output/model.tar.gz",
        "/evaluation/evaluation.json",
    ):
        assert any(k.endswith(expected) for k in keys), (expected, keys)

    sagemaker = client("sagemaker")
    packages = sagemaker.list_model_packages(ModelPackageGroupName="churn-models")
    summaries = packages["ModelPackageSummaryList"]
    assert [p["ModelApprovalStatus"] for p in summaries] == ["Approved"]
    assert summaries[0]["ModelPackageArn"] in result.stdout

    # the scores written back through the connector, one per customer, by this model
    (predictions,) = [
        line for line in result.stdout.splitlines() if line.startswith("Predictions:")
    ]
    assert " 0 inserted" not in predictions, predictions
    with connect_to_fakesnow_server(
        fakesnow_server, login_timeout=10, network_timeout=30, **SNOWFLAKE_LOGIN
    ) as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*), COUNT(DISTINCT CUSTOMER_ID), MIN(SCORE), MAX(SCORE), "
            "COUNT(DISTINCT MODEL_PACKAGE_ARN), MAX(MODEL_PACKAGE_ARN) FROM PREDICTIONS"
        )
        rows, customers, lowest, highest, models, model = cursor.fetchone()
    assert rows == customers > 0 and 0 <= lowest <= highest <= 1
    assert (models, model) == (1, summaries[0]["ModelPackageArn"])
    assert f"{rows:,} new or changed rows scored" in predictions


def test_extract_needs_its_definition_not_the_callers_shell(
    moto_server, fakesnow_server, tmp_path, monkeypatch, aws_credentials
):
    """On SageMaker a job sees only its request: a setting only the caller's shell has
    fails the job here too, and passes once the definition carries it.
    """
    from pipelines.definition import build_definition
    from pipelines.local_runner import LocalRunner
    from pipelines.step_names import EXTRACT, PREFLIGHT
    from stack.config import load_config
    from stack.resources import build_resources

    moto = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", **moto
    ).create_bucket(Bucket="mlops-test")
    secret = boto3.client(
        "secretsmanager", endpoint_url=moto_server, region_name="us-east-1", **moto
    ).create_secret(Name="snowflake-mlops", SecretString=json.dumps(SNOWFLAKE_LOGIN))
    config = load_config(
        "test",
        {
            "state_dir": str(tmp_path / "state"),
            "aws.endpoint_url": moto_server,
            "snowflake.port": fakesnow_server,
            "snowflake.secret_arn": secret["ARN"],
        },
        environ={},
    )
    definition = build_definition(config)
    steps = [s for s in definition["Steps"] if s["Name"] in (PREFLIGHT, EXTRACT)]
    only_extract = {**definition, "Steps": steps}
    runner = LocalRunner(build_resources(config))

    # the account only in the caller's shell, as on the machine that upserts
    monkeypatch.setenv("MLOPS_SNOWFLAKE__ACCOUNT", "fakesnow")
    environments = [step["Arguments"]["Environment"] for step in steps]
    accounts = [e.pop("MLOPS_SNOWFLAKE__ACCOUNT") for e in environments]
    failed = runner.run(only_extract)
    assert failed.status == "Failed"  # at the first job that reads Snowflake
    assert "snowflake.account is not set" in failed.step(PREFLIGHT).failure_reason

    for environment, account in zip(environments, accounts, strict=True):
        environment["MLOPS_SNOWFLAKE__ACCOUNT"] = account  # as build_definition made it
    passed = runner.run(only_extract)
    assert passed.status == "Succeeded", passed.step(EXTRACT).failure_reason
    assert "fake-password-in-moto" not in json.dumps(definition)
