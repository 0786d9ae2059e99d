import contextlib
import subprocess
import sys

import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions.deploy import LEDGER, DeployError, deploy
from snowflake.sagemaker_predictions.templates import SqlObject, render
from tests.conftest import PROJECT_ROOT


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "snowflake.sagemaker_predictions", *args],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def statuses(outcomes):
    return {o.obj.kind: o.status for o in outcomes}


def test_deploy_on_the_embedded_snowflake_creates_once_then_changes_nothing(
    warehouse, local_config
):
    objects = render(local_config, load_feature_set("churn"), placeholders=True)
    first = statuses(deploy(warehouse, objects))
    assert first["table"] == first["comment"] == "created"
    assert {first[k] for k in first if k not in ("table", "comment")} == {
        "real Snowflake only"
    }
    again = statuses(deploy(warehouse, objects))
    assert again["table"] == again["comment"] == "unchanged"
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT OBJECT_KIND, OBJECT_NAME FROM {LEDGER} ORDER BY 1")
        assert cursor.fetchall() == [
            ("comment", "PREDICTIONS"),
            ("table", "PREDICTIONS"),
        ]
        cursor.execute("SELECT COUNT(*) FROM PREDICTIONS")
        assert cursor.fetchone() == (0,)


def test_a_replaceable_object_is_created_left_alone_then_changed(warehouse):
    # a stand-in fakesnow can run, of a kind whose existence only the ledger knows
    def view(body):
        statement = f"CREATE OR REPLACE VIEW V_TEST AS SELECT {body} AS X"
        return [SqlObject("V999__test.sql", "grants", "V_TEST", (statement,), True)]

    assert statuses(deploy(warehouse, view(1))) == {"grants": "created"}
    assert statuses(deploy(warehouse, view(1))) == {"grants": "unchanged"}
    assert statuses(deploy(warehouse, view(2))) == {"grants": "changed"}
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT X FROM V_TEST")
        assert cursor.fetchone() == (2,)


class _Refused(Exception):
    errno = 3001


class _NoPrivilegeWarehouse:
    emulated = False

    @contextlib.contextmanager
    def connect(self):
        class Cursor:
            def execute(self, sql, params=None):
                raise _Refused(
                    "003001 (42501): SQL access control error: "
                    "Insufficient privileges to operate on schema 'CHURN'"
                )

        class Conn:
            def cursor(self):
                return Cursor()

        yield Conn()


def test_a_missing_privilege_is_named_plainly(local_config):
    objects = render(local_config, load_feature_set("churn"), placeholders=True)
    with pytest.raises(DeployError, match="the role lacks a privilege"):
        deploy(_NoPrivilegeWarehouse(), objects)


def test_dry_run_prints_every_statement_and_connects_to_nothing():
    result = cli("deploy", "--env", "dev", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "CREATE TABLE IF NOT EXISTS PREDICTIONS",
        "CREATE API INTEGRATION IF NOT EXISTS SAGEMAKER_PREDICTIONS_API",
        "CREATE OR REPLACE EXTERNAL FUNCTION PREDICT_CHURN(",
        "CREATE OR REPLACE PROCEDURE SCORE_NEW_PREDICTIONS(AS_OF DATE)",
        "CREATE OR REPLACE TASK SCORE_PREDICTIONS",
        "GRANT SELECT ON TABLE PREDICTIONS TO ROLE PREDICTIONS_READER",
    ):
        assert needle in out
    assert "nothing was applied" in out


def test_deploy_command_on_the_embedded_snowflake_and_bad_config(tmp_path):
    env = {"MLOPS_STATE_DIR": str(tmp_path)}
    first = cli("deploy", "--env", "local", env=env)
    assert first.returncode == 0, first.stderr
    assert "created  table             PREDICTIONS" in first.stdout
    assert "exist only in real Snowflake: SAGEMAKER_PREDICTIONS_API" in first.stdout
    second = cli("deploy", "--env", "local", env=env)
    assert "unchanged  table             PREDICTIONS" in second.stdout
    bad = cli(
        "deploy", "--env", "local",
        env={**env, "MLOPS_SNOWFLAKE_OBJECTS__SCHEDULE": "never"},
    )  # fmt: skip
    assert bad.returncode == 2 and "not a task schedule" in bad.stderr


def test_deploy_through_the_real_connector_against_a_fakesnow_server(
    fakesnow_server, tmp_path
):
    env = {
        "MLOPS_SNOWFLAKE__PORT": str(fakesnow_server),
        "MLOPS_SNOWFLAKE__PASSWORD": "fake",
        "MLOPS_STATE_DIR": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    first = cli("deploy", "--env", "test", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created  table             PREDICTIONS" in first.stdout
    assert "real Snowflake only  procedure" in first.stdout
    second = cli("deploy", "--env", "test", env=env)
    assert "unchanged  table             PREDICTIONS" in second.stdout, second.stderr
