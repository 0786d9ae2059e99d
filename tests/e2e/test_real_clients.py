"""The loop through the clients production uses: boto3 against moto's server (S3, the
SageMaker model registry) and the Snowflake connector against a fakesnow server.

Write-back is left out here: fakesnow's server cannot run ``write_pandas``
(see docs/architecture.md); the embedded loop covers it.
"""

import subprocess
import sys

import boto3
import pytest

from tests.conftest import PROJECT_ROOT, SMALL_CUSTOMERS, free_port, run_cli

pytestmark = pytest.mark.e2e


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
    state = tmp_path / "state"
    env = {
        **aws,
        "MLOPS_AWS__ENDPOINT_URL": moto_server,
        "MLOPS_SNOWFLAKE__PORT": str(fakesnow_server),
        "MLOPS_SNOWFLAKE__PASSWORD": "fake",
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_LOCAL_ENDPOINT__PORT": str(free_port()),
        "MLOPS_DEMO__CUSTOMERS": str(SMALL_CUSTOMERS),
    }
    try:
        result = run_cli("--env", "test", "--no-writeback", env=env)
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
