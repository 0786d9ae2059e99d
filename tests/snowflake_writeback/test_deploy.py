import contextlib
import re
import subprocess
import sys

import pytest
import sqlglot
from sqlglot import exp

from features import load_feature_set
from snowflake.sagemaker_predictions.deploy import LEDGER, DeployError, deploy
from snowflake.sagemaker_predictions.procedure_code import _path_safe
from snowflake.sagemaker_predictions.templates import (
    SqlObject,
    render,
    split_statements,
)
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
    warehouse, local_config, procedure_code
):
    objects = render(
        local_config, load_feature_set("churn"), procedure_code, placeholders=True
    )
    embedded = ("table", "comment")
    first = statuses(deploy(warehouse, objects))
    assert {first[k] for k in embedded} == {"created"}
    assert {first[k] for k in first if k not in embedded} == {"real Snowflake only"}
    again = statuses(deploy(warehouse, objects))
    assert {again[k] for k in embedded} == {"unchanged"}
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


def test_a_missing_privilege_is_named_plainly(local_config, procedure_code):
    objects = render(
        local_config, load_feature_set("churn"), procedure_code, placeholders=True
    )
    with pytest.raises(DeployError, match="the role lacks a privilege"):
        deploy(_NoPrivilegeWarehouse(), objects)


def test_dry_run_shows_every_statement_and_all_of_it_parses_as_snowflake_sql():
    """The whole text, as a reviewer reads it in the CD log: each statement parses
    with sqlglot's Snowflake dialect, and only the statements sqlglot has no grammar
    for (API integration, task) are kept as opaque commands.
    """
    result = cli("deploy", "--env", "dev", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing was applied" in out
    version = re.search(r"snowflake-sagemaker-mlops (\S+) \(archive", out).group(1)
    folder = f"@SAGEMAKER_PREDICTIONS_CODE/sagemaker_predictions/{_path_safe(version)}"
    for needle in (
        "CREATE TABLE IF NOT EXISTS PREDICTIONS",
        "CREATE OR REPLACE EXTERNAL FUNCTION PREDICT_CHURN(",
        "CREATE STAGE IF NOT EXISTS SAGEMAKER_PREDICTIONS_CODE",
        f"{folder}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE",
        "CREATE OR REPLACE PROCEDURE SCORE_NEW_PREDICTIONS(AS_OF VARCHAR DEFAULT NULL)"
        "\nCOPY GRANTS\nRETURNS VARIANT\nLANGUAGE PYTHON",
        f"IMPORTS = ('{folder}/snowflake_sagemaker_mlops-{_path_safe(version)}.zip', "
        f"'{folder}/sagemaker_predictions_procedure.json')",
        "HANDLER = 'snowflake.sagemaker_predictions.handler.run'",
        "EXECUTE AS OWNER",
        "CREATE OR REPLACE TASK SCORE_PREDICTIONS",
        "TIMEZONE = 'UTC'",
        "GRANT SELECT ON TABLE PREDICTIONS TO ROLE PREDICTIONS_READER",
    ):
        assert needle in out, needle
    statements = split_statements(out)
    puts = [s for s in statements if s.startswith("PUT ")]
    assert len(puts) == 2
    commands = []
    for statement in statements:
        parsed = sqlglot.parse_one(statement, read="snowflake")
        assert parsed is not None, statement
        if isinstance(parsed, exp.Command):
            commands.append(" ".join(statement.split()[:4]))
        if statement.startswith("CREATE OR REPLACE") and "TASK" not in statement:
            assert "COPY GRANTS" in statement, statement
    assert sorted(commands) == [
        "ALTER API INTEGRATION SAGEMAKER_PREDICTIONS_API",
        "ALTER TASK SCORE_PREDICTIONS RESUME",
        "CREATE API INTEGRATION IF",
        "CREATE OR REPLACE TASK",
    ]


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
