"""The extract's Snowflake password comes from Secrets Manager inside the job, at run
time: the definition carries only its reference (the ARN), never its value, nor does
a log.

moto's server stands in for Secrets Manager and a fakesnow server for Snowflake; the
extract runs as the container runs it, through the real connector.
"""

import json
import os
import subprocess
import sys

import boto3
import pytest

from tests.conftest import PROJECT_ROOT

SENTINEL = "pw-sentinel-5d3a9e"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def run_extract(tmp_path, env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AWS_"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "processing.extract",
            "--as-of",
            "2026-03-31",
            "--data-version",
            "2026-04-01T00:00:00Z",
        ],
        env={**base, **AWS, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_password_is_read_from_secrets_manager_at_run_time_and_never_shown(
    moto_server, fakesnow_server, tmp_path
):
    from pipelines.definition import build_definition
    from stack.config import load_config

    secrets = boto3.client("secretsmanager", endpoint_url=moto_server, **_client())
    arn = secrets.create_secret(
        Name="snowflake/extract",
        SecretString=json.dumps({"user": "svc_extract", "password": SENTINEL}),
    )["ARN"]
    settings = {
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_AWS__ENDPOINT_URL": moto_server,
        "MLOPS_SNOWFLAKE__PORT": str(fakesnow_server),
        "MLOPS_SNOWFLAKE__SECRET_ARN": arn,
        "MLOPS_EXTRACT__SLICE_ROWS": "800",
    }

    # the definition carries the secret's reference, and its value never
    definition = json.dumps(build_definition(load_config("test", environ=settings)))
    extract = json.loads(definition)["Steps"][0]["Arguments"]
    assert SENTINEL not in definition
    assert extract["Environment"]["MLOPS_SNOWFLAKE__SECRET_ARN"] == arn
    # the job gets its request's Environment, and where the platform's stand-ins are
    # (moto for AWS, as pipelines.local_runner.platform_variables gives it)
    env = {
        **extract["Environment"],
        "MLOPS_STATE_DIR": settings["MLOPS_STATE_DIR"],
        "AWS_ENDPOINT_URL": moto_server,
        "OPT_ML_ROOT": str(tmp_path / "opt_ml"),
    }
    assert "MLOPS_AWS__ENDPOINT_URL" not in env  # the platform's, not the definition's

    result = run_extract(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "slice 1/" in result.stderr  # the step's log, checked for the secret below
    assert SENTINEL not in result.stdout + result.stderr
    written = [p for p in (tmp_path / "opt_ml").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written)
    for path in written:
        assert SENTINEL.encode() not in path.read_bytes(), path
    manifest = json.loads(
        (tmp_path / "opt_ml/processing/output/test/manifest-algo-1.json").read_text()
    )
    assert manifest["rows_total"] > 0
    assert manifest["data_version"]["pinned"] is False  # a fakesnow server

    # the secret is what the job reads: a reference to a missing one fails the step
    missing = run_extract(
        tmp_path, {**env, "MLOPS_SNOWFLAKE__SECRET_ARN": arn + "-gone"}
    )
    assert missing.returncode == 1
    message = (tmp_path / "opt_ml" / "output" / "message").read_text()
    assert "cannot read the Snowflake secret" in message


def _client():
    return {
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


@pytest.fixture(autouse=True)
def _aws(aws_credentials):
    """Fake AWS credentials for the definition build in this process."""
