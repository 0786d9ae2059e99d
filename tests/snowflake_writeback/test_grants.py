"""Grants survive a redeploy that replaces an object.

fakesnow runs no GRANT, EXTERNAL FUNCTION, PROCEDURE or TASK, so these tests put a
small model of Snowflake's documented grant behaviour in front of the embedded
Snowflake (which still runs the ledger, the table and the comment): ``CREATE OR
REPLACE`` drops an object's grants unless it says ``COPY GRANTS``; ``GRANT`` adds one;
``SHOW <kind> LIKE`` finds what was created. The model records the grants held after
every statement, so a test can tell which mechanism kept them.
"""

import contextlib
import dataclasses
import re

from features import load_feature_set
from snowflake.sagemaker_predictions.deploy import deploy
from snowflake.sagemaker_predictions.templates import render
from stack.config import load_config

URL = "https://abc.execute-api.us-east-1.amazonaws.com/prod/"
ACCOUNT = {
    "snowflake_objects.api_aws_role_arn": "arn:aws:iam::000000000000:role/sf-api",
    "snowflake_objects.api_allowed_prefixes": URL,
    "snowflake_objects.api_url": URL + "predict",
    "snowflake_objects.grant_role": "PREDICTIONS_READER",
}
_CREATE = re.compile(
    r"^CREATE (?:OR REPLACE )?(?:API INTEGRATION (?:IF NOT EXISTS )?|EXTERNAL FUNCTION |"
    r"PROCEDURE |TASK )(\w+)"
)
_GRANT = re.compile(r"^GRANT (\w+) ON (\w+) ([\w.]+)(?:\(.*\))? TO ROLE (\w+)$", re.S)
_SHOW = re.compile(r"^SHOW (?:INTEGRATIONS|EXTERNAL FUNCTIONS|PROCEDURES|TASKS) LIKE")


class GrantModel:
    """Account objects and grants as Snowflake keeps them (see the module doc)."""

    def __init__(self):
        self.objects: set[str] = set()
        self.grants: set[tuple[str, str, str]] = set()  # (privilege, object, role)
        self.log: list[tuple[str, frozenset]] = []  # (statement, grants after it)

    def handles(self, sql: str) -> bool:
        return bool(
            _CREATE.match(sql)
            or _GRANT.match(sql)
            or _SHOW.match(sql)
            or sql.startswith(("ALTER API INTEGRATION", "ALTER TASK"))
        )

    def execute(self, sql: str, params) -> list:
        rows: list = []
        if _SHOW.match(sql):
            rows = [(params[0],)] if params[0] in self.objects else []
        elif match := _CREATE.match(sql):
            name = match.group(1)
            if "OR REPLACE" in sql and "COPY GRANTS" not in sql:
                self.grants = {g for g in self.grants if g[1] != name}
            self.objects.add(name)
        elif match := _GRANT.match(sql):
            privilege, _, name, role = match.groups()
            self.grants.add((privilege, name, role))
        self.log.append((sql, frozenset(self.grants)))
        return rows


class GrantTrackingWarehouse:
    """Real Snowflake as far as the deployer can tell (``emulated`` false)."""

    emulated = False

    def __init__(self, embedded):
        self.embedded = embedded
        self.model = GrantModel()

    @contextlib.contextmanager
    def connect(self):
        with self.embedded.connect() as conn:
            yield _Conn(conn, self.model)


class _Conn:
    def __init__(self, conn, model):
        self._conn, self._model = conn, model

    def cursor(self):
        return _Cursor(self._conn.cursor(), self._model)


class _Cursor:
    def __init__(self, cursor, model):
        self._cursor, self._model, self._rows = cursor, model, None

    def execute(self, sql, params=None):
        if self._model.handles(sql):
            self._rows = self._model.execute(sql, params)
        else:
            self._rows = None
            self._cursor.execute(sql, params)

    def fetchall(self):
        return self._rows if self._rows is not None else self._cursor.fetchall()

    def fetchone(self):
        return self._cursor.fetchone()


def objects(code, **overrides):
    config = load_config("dev", overrides={**ACCOUNT, **overrides})
    return render(config, load_feature_set("churn"), code)


def statuses(outcomes):
    return {o.obj.kind: (o.status, o.note) for o in outcomes}


def test_every_create_or_replace_of_a_granted_object_copies_its_grants(
    procedure_code,
):
    for obj in objects(procedure_code):
        for statement in obj.statements:
            if statement.startswith("CREATE OR REPLACE") and obj.kind != "task":
                assert "COPY GRANTS" in statement, statement
    # the task holds no grants (none of ours names it)
    (grants,) = [o for o in objects(procedure_code) if o.kind == "grants"]
    assert ("external_function", "PREDICT_CHURN") in grants.grants_on
    assert not any("TASK" in s for s in grants.statements)


def test_a_new_url_replaces_the_function_and_the_reader_keeps_its_usage(
    warehouse, procedure_code
):
    snowflake = GrantTrackingWarehouse(warehouse)
    usage = ("USAGE", "PREDICT_CHURN", "PREDICTIONS_READER")
    first = statuses(deploy(snowflake, objects(procedure_code)))
    assert first["external_function"][0] == first["grants"][0] == "created"
    assert usage in snowflake.model.grants
    assert statuses(deploy(snowflake, objects(procedure_code)))["grants"] == (
        "unchanged",
        "",
    )

    snowflake.model.log.clear()
    moved = objects(procedure_code, **{"snowflake_objects.api_url": URL + "v2/predict"})
    again = statuses(deploy(snowflake, moved))
    assert again["external_function"] == ("changed", "")
    assert again["grants"] == (
        "changed",
        "applied again: external_function PREDICT_CHURN was created or replaced",
    )
    assert usage in snowflake.model.grants
    # both mechanisms, in order: the replace copied the grant (COPY GRANTS), then
    # the grants statement ran again
    replace = next(
        i for i, (sql, _) in enumerate(snowflake.model.log) if "v2/predict" in sql
    )
    assert usage in snowflake.model.log[replace][1]
    assert any(
        sql.startswith("GRANT USAGE ON FUNCTION PREDICT_CHURN")
        for sql, _ in snowflake.model.log[replace + 1 :]
    )


def test_without_copy_grants_the_reapplied_grants_still_restore_usage(
    warehouse, procedure_code
):
    """The re-apply alone is enough: a replace that drops the grants (a template
    without COPY GRANTS, as V003 was) is followed by the grants statements.
    """
    snowflake = GrantTrackingWarehouse(warehouse)
    usage = ("USAGE", "PREDICT_CHURN", "PREDICTIONS_READER")
    deploy(snowflake, objects(procedure_code))

    def without_copy_grants(objs):
        return [
            dataclasses.replace(
                o, statements=tuple(s.replace("COPY GRANTS", "") for s in o.statements)
            )
            for o in objs
        ]

    snowflake.model.log.clear()
    deploy(
        snowflake,
        without_copy_grants(
            objects(procedure_code, **{"snowflake_objects.api_url": URL})
        ),
    )
    replace = next(
        i
        for i, (sql, _) in enumerate(snowflake.model.log)
        if sql.startswith("CREATE OR REPLACE EXTERNAL FUNCTION")
    )
    assert usage not in snowflake.model.log[replace][1]  # the model drops them
    assert usage in snowflake.model.grants  # and the deploy gave them back
