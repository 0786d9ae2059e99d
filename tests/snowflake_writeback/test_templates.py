import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlglot
from sqlglot import exp

from features import load_feature_set
from snowflake.sagemaker_predictions.templates import (
    PAYLOAD_LIMIT_BYTES,
    UTC_NOW_SQL,
    UTC_TODAY_SQL,
    max_batch_rows,
    render,
    split_statements,
    sql_literal,
)
from stack.config import ConfigError, load_config

ROLE = "arn:aws:iam::000000000000:role/snowflake-api"
# sqlglot 30 has grammar for tables, external functions, stages, PUT, procedures and
# grants; it keeps API INTEGRATION and TASK statements as an opaque Command (tokens
# checked only)
EXPECTED = {
    "table": exp.Create,
    "external_function": exp.Create,
    "stage": exp.Create,
    "stage_files": exp.Put,
    "procedure": exp.Create,
    "grants": exp.Grant,
    "api_integration": exp.Command,
    "task": exp.Command,
    "comment": exp.Alter,
}


@pytest.fixture(autouse=True)
def _code(procedure_code):
    global CODE
    CODE = procedure_code


def rendered(env="dev", **overrides):
    config = load_config(env, overrides=overrides)
    return render(config, load_feature_set("churn"), CODE, placeholders=True)


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_every_rendered_statement_parses_as_snowflake_sql(env):
    url = "https://abc.execute-api.us-east-1.amazonaws.com/x/"
    objects = rendered(
        env,
        **{
            "snowflake_objects.api_aws_role_arn": ROLE,
            "snowflake_objects.api_url": url + "predict",
            "snowflake_objects.api_allowed_prefixes": url,
        },
    )
    assert [o.kind for o in objects] == [
        "table", "api_integration", "external_function", "stage", "stage_files",
        "procedure", "task", "grants", "comment",
    ]  # fmt: skip
    for obj in objects:
        for statement in obj.statements:
            parsed = sqlglot.parse_one(statement, read="snowflake")
            assert isinstance(parsed, EXPECTED[obj.kind]), statement
            assert "{{" not in statement and "<unset" not in statement


def test_the_procedure_is_the_releases_python_handler_from_the_code_stage():
    objects = {o.kind: o for o in rendered()}
    (create,) = objects["procedure"].statements
    archive, settings = CODE.staged("SAGEMAKER_PREDICTIONS_CODE")
    assert archive.endswith(f"/{CODE.folder}/{CODE.archive.name}")
    for clause in (
        "CREATE OR REPLACE PROCEDURE SCORE_NEW_PREDICTIONS(AS_OF VARCHAR DEFAULT NULL)",
        "COPY GRANTS",
        "RETURNS VARIANT",
        "LANGUAGE PYTHON",
        "RUNTIME_VERSION = '3.11'",
        "PACKAGES = ('snowflake-snowpark-python==1.56.0')",
        f"IMPORTS = ('{archive}', '{settings}')",
        "HANDLER = 'snowflake.sagemaker_predictions.handler.run'",
        f"COMMENT = '{CODE.description}'",
        "EXECUTE AS OWNER",
    ):
        assert clause in create
    # the two files the procedure imports are the two the deploy uploads there
    puts = objects["stage_files"].statements
    assert [p.split()[1] for p in puts] == [
        f"'{CODE.archive.resolve().as_uri()}'",
        f"'{CODE.settings.resolve().as_uri()}'",
    ]
    for put in puts:
        target = put.split()[2]
        assert target == f"@SAGEMAKER_PREDICTIONS_CODE/{CODE.folder}/"
        assert "AUTO_COMPRESS = FALSE" in put


def test_max_batch_rows_keeps_the_worst_case_request_under_the_payload_limit():
    function = next(o for o in rendered() if o.kind == "external_function")
    rows = int(re.search(r"MAX_BATCH_ROWS = (\d+)", function.statements[0]).group(1))
    assert rows == max_batch_rows(19) > 1000
    worst_row = "[65535," + ",".join(["-1.7976931348623157e+308"] * 19) + "],"
    assert len('{"data":[') + rows * len(worst_row) <= PAYLOAD_LIMIT_BYTES
    with pytest.raises(ConfigError, match="payload limit"):
        rendered(**{"snowflake_objects.max_batch_rows": rows + 1})


def test_unset_account_values_fail_unless_placeholders_are_asked_for():
    config = load_config("dev")
    with pytest.raises(ConfigError, match="api_aws_role_arn is not set"):
        render(config, load_feature_set("churn"), CODE)
    text = "\n".join(s for o in rendered() for s in o.statements)
    assert "'<unset: snowflake_objects.api_aws_role_arn>'" in text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("snowflake_objects.function", "PREDICT; DROP TABLE X", "identifier"),
        ("snowflake_objects.grant_role", "a b", "identifier"),
        ("snowflake_objects.schedule", "'; DROP TABLE X --", "task schedule"),
        ("snowflake_objects.api_url", "https://x.example/'||x", "https URL"),
        ("snowflake_objects.api_url", "https://elsewhere.example/p", "must start"),
        ("snowflake_objects.api_aws_role_arn", "arn:aws:iam::1:role/x", "role ARN"),
        ("writeback.entity_type", "VARCHAR; DROP", "NUMBER"),
    ],
)
def test_bad_configuration_is_refused_before_anything_renders(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config("dev", overrides={key: value})


def test_no_grants_without_a_role_and_literals_are_escaped():
    kinds = [o.kind for o in rendered(**{"snowflake_objects.grant_role": ""})]
    assert "grants" not in kinds
    assert sql_literal("it's \\ here") == "'it\\'s \\\\ here'"


def test_statements_split_outside_dollar_bodies_only():
    text = (
        "-- head\nCREATE X;\nCREATE P AS\n$$\nBEGIN\n  A;\n  B;\nEND;\n$$;\nGRANT Y;\n"
    )
    assert split_statements(text) == [
        "CREATE X", "CREATE P AS\n$$\nBEGIN\n  A;\n  B;\nEND;\n$$", "GRANT Y"
    ]  # fmt: skip
    with pytest.raises(ConfigError):
        split_statements("CREATE X")


def test_the_procedure_and_the_batch_job_fingerprint_features_alike():
    from datetime import date

    from snowflake.sagemaker_predictions.features_hash import features_hash_sql
    from snowflake.sagemaker_predictions.procedure import (
        ProcedureSettings,
        feature_query,
    )
    from snowflake.sagemaker_predictions.writeback import changed_entities_sql

    feature_set = load_feature_set("churn")
    features = [f.upper() for f in feature_set.schema.feature_names]
    fingerprint = features_hash_sql(features, "q")
    settings = ProcedureSettings.from_config(load_config("dev"), feature_set)
    procedure = feature_query(settings, date(2026, 1, 1))
    assert f"SELECT q.*, {fingerprint} AS FEATURES_HASH" in procedure
    job = changed_entities_sql(feature_set.sql, "PREDICTIONS", "CUSTOMER_ID", features)
    assert f"SELECT q.*, {fingerprint} AS FEATURES_HASH" in job


def test_the_fingerprint_tells_nulls_zeros_and_swapped_values_apart(warehouse):
    from snowflake.sagemaker_predictions.features_hash import features_hash_sql

    rows = [(1, 2.5, 3), (1, 2.5, 3), (1, 2.5, None), (1, 2.5, 0), (3, 2.5, 1),
            (1, 2.25, 3), (None, None, None)]  # fmt: skip
    values = ", ".join(
        f"({n}, " + ", ".join("NULL" if v is None else repr(v) for v in row) + ")"
        for n, row in enumerate(rows)
    )
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute("CREATE TABLE FP (A INTEGER, B FLOAT, C INTEGER, N INTEGER)")
        cursor.execute(
            "INSERT INTO FP SELECT column2, column3, column4, column1 "
            f"FROM VALUES {values}"
        )
        cursor.execute(
            f"SELECT {features_hash_sql(['A', 'B', 'C'], 'q')} FROM FP AS q ORDER BY N"
        )
        hashes = [row[0] for row in cursor.fetchall()]
    assert all(isinstance(h, str) and h for h in hashes)
    assert hashes[0] == hashes[1]  # the same features, the same fingerprint
    assert len(set(hashes[1:])) == len(rows) - 1  # every difference shows


def test_the_score_column_says_it_is_a_calibrated_probability():
    (comment,) = [o for o in rendered() if o.kind == "comment"]
    (statement,) = comment.statements
    assert " ".join(statement.split()).startswith(
        "ALTER TABLE PREDICTIONS ALTER COLUMN SCORE COMMENT 'Calibrated probability"
    )
    assert "within 90 days after AS_OF_DATE" in statement


def test_the_task_uses_utc_whatever_the_session_time_zone():
    objects = {o.kind: o for o in rendered()}
    task = objects["task"].statements[0]
    assert "TIMEZONE = 'UTC'" in task
    assert task.rstrip().endswith(
        f"CALL SCORE_NEW_PREDICTIONS(TO_VARCHAR({UTC_TODAY_SQL}, 'YYYY-MM-DD'))"
    )
    # nothing we ship reads the clock in the session's time zone
    for obj in objects.values():
        for statement in obj.statements:
            bare = statement.replace(UTC_NOW_SQL, "").replace(UTC_TODAY_SQL, "")
            assert "CURRENT_TIMESTAMP" not in bare and "CURRENT_DATE" not in bare


def test_the_utc_expressions_are_utc_in_a_session_fourteen_hours_ahead():
    """Executed, not only parsed: transpiled to DuckDB (fakesnow ignores session
    time zones) in a session whose TimeZone is UTC+14. The bare expressions are
    shown to differ there, so this test can tell them apart.
    """
    import duckdb

    def run(snowflake_sql):
        duck = sqlglot.transpile(f"SELECT {snowflake_sql}", "snowflake", "duckdb")[0]
        return conn.execute(duck).fetchone()[0]

    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(run(UTC_NOW_SQL) - now) < timedelta(minutes=1)
    assert run(UTC_TODAY_SQL) in {now.date(), (now + timedelta(minutes=1)).date()}
    local = run("CURRENT_TIMESTAMP()::TIMESTAMP_NTZ")
    assert abs(local - now - timedelta(hours=14)) < timedelta(minutes=1)
