import json
import time

import boto3
import pytest
from moto import mock_aws

from stack.config import load_config
from stack.resources import AwsClients, build_warehouse
from stack.warehouse import (
    ConnectorWarehouse,
    WarehouseUnavailable,
    secrets_manager_resolver,
)
from tests.conftest import free_port


def connector_config(port: int, **extra: str):
    environ = {
        "MLOPS_SNOWFLAKE__MODE": "connector",
        "MLOPS_SNOWFLAKE__ACCOUNT": "fakesnow",
        "MLOPS_SNOWFLAKE__USER": "fake",
        "MLOPS_SNOWFLAKE__PASSWORD": "fake",
        "MLOPS_SNOWFLAKE__HOST": "127.0.0.1",
        "MLOPS_SNOWFLAKE__PORT": str(port),
        "MLOPS_SNOWFLAKE__PROTOCOL": "http",
        "MLOPS_SNOWFLAKE__LOGIN_TIMEOUT": "3",
        "MLOPS_SNOWFLAKE__NETWORK_TIMEOUT": "5",
        **extra,
    }
    return load_config("local", environ=environ)


def test_unreachable_snowflake_fails_fast_with_one_clear_error():
    warehouse = build_warehouse(connector_config(free_port()))
    started = time.monotonic()
    with (
        pytest.raises(
            WarehouseUnavailable, match="cannot connect to Snowflake at 127.0.0.1"
        ),
        warehouse.connect(),
    ):
        pass
    assert time.monotonic() - started < 60


def test_connector_path_runs_our_queries_on_a_fakesnow_server(fakesnow_server):
    warehouse = build_warehouse(
        connector_config(
            fakesnow_server, MLOPS_SNOWFLAKE__SESSION_PARAMETERS__QUERY_TAG="t"
        )
    )
    assert isinstance(warehouse, ConnectorWarehouse)
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM CUSTOMERS WHERE SIGNUP_DATE < %(d)s",
            {"d": "2030-01-01"},
        )
        assert cursor.fetchone()[0] == 3000


def test_credentials_come_from_secrets_manager_at_connect_time(aws_credentials):
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(
            Name="snowflake/churn",
            SecretString=json.dumps(
                {"user": "svc_user", "password": "s3cret-sentinel"}
            ),
        )["ARN"]
        config = connector_config(1, MLOPS_SNOWFLAKE__SECRET_ARN=arn)
        warehouse = build_warehouse(config, AwsClients(config))
        creds = warehouse._credentials()
        # the secret wins over the password from the environment
        assert creds == {"user": "svc_user", "password": "s3cret-sentinel"}
        assert "s3cret-sentinel" not in repr(config)


def test_a_missing_secret_is_a_clear_error(aws_credentials):
    with mock_aws():
        resolve = secrets_manager_resolver(
            boto3.client("secretsmanager", region_name="us-east-1")
        )
        with pytest.raises(
            WarehouseUnavailable, match="cannot read the Snowflake secret"
        ):
            resolve("arn:aws:secretsmanager:us-east-1:000000000000:secret:none")


def test_connector_needs_an_account():
    config = load_config("local", environ={"MLOPS_SNOWFLAKE__MODE": "connector"})
    with pytest.raises(WarehouseUnavailable, match="snowflake.account is not set"):
        build_warehouse(config)


def test_a_locked_embedded_snowflake_is_waited_for(warehouse):
    """A second process waits for DuckDB's file lock instead of failing at once."""
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from stack.warehouse import EmbeddedWarehouse\n"
        "w = EmbeddedWarehouse(Path(sys.argv[1]), 'MLOPS', 'CHURN', lock_timeout=float(sys.argv[2]))\n"
        "with w.connect() as conn:\n"
        "    cursor = conn.cursor()\n"
        "    cursor.execute('SELECT COUNT(*) FROM CUSTOMERS')\n"
        "    print(cursor.fetchone()[0])\n"
    )

    def other_process(timeout: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(warehouse.root), str(timeout)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    with warehouse.connect():
        impatient = other_process(0.5)
        assert impatient.wait(timeout=60) == 1
        assert "Could not set lock" in impatient.stderr.read()
        patient = other_process(60)
        time.sleep(2)
        assert patient.poll() is None  # still waiting for the lock
    assert patient.wait(timeout=60) == 0
    assert patient.stdout.read().strip() == "3000"
