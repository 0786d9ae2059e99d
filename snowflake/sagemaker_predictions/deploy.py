"""Apply the rendered Snowflake objects idempotently, in dependency order.

A ledger table records the SHA-256 of what was last applied per object. An object
whose rendered SQL matches the ledger and which still exists is left alone
(``unchanged``); a missing one is ``created``; a replaceable one whose SQL moved is
applied again (``changed``). PREDICTIONS itself is never replaced: it is created when
missing and otherwise left alone (a change of its shape is a new versioned file); so
is the code stage. The procedure's code is uploaded (PUT) when the ledger does not
record those exact files or LIST does not show them; the procedure names its release
and settings digests, so a new release replaces it and redeploying one does nothing.

Grants survive a replaced object twice over: every ``CREATE OR REPLACE`` of an
object with grants says ``COPY GRANTS``, and the grants that name an object
(``SqlObject.grants_on``) are applied again in the same deploy whenever that object
is created or changed, so a grant lost any other way (an object dropped and made
again by hand, a template without ``COPY GRANTS``) comes back too.
On fakesnow (``warehouse.emulated``) only the objects it can run are applied; the
others are reported as existing only in real Snowflake.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from snowflake.sagemaker_predictions.templates import UTC_NOW_SQL, SqlObject
from stack.warehouse import Warehouse

log = logging.getLogger(__name__)
LEDGER = "SAGEMAKER_PREDICTIONS_DEPLOYMENTS"
_LEDGER_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LEDGER} (OBJECT_KIND VARCHAR NOT NULL, "
    "OBJECT_NAME VARCHAR NOT NULL, TEMPLATE VARCHAR NOT NULL, "
    "SQL_SHA256 VARCHAR NOT NULL, DEPLOYED_AT TIMESTAMP_NTZ NOT NULL)"
)
# How to ask whether an object of each kind exists (LIKE takes a bound pattern).
_SHOW = {
    "api_integration": "SHOW INTEGRATIONS LIKE %s",
    "external_function": "SHOW EXTERNAL FUNCTIONS LIKE %s",
    "stage": "SHOW STAGES LIKE %s",
    "procedure": "SHOW PROCEDURES LIKE %s",
    "task": "SHOW TASKS LIKE %s",
}
# Snowflake's "Insufficient privileges to operate on ..." and "does not exist or not
# authorized" errors
_PRIVILEGE_ERRNOS = {3001, 2003}

# Made when missing, never replaced: a changed PREDICTIONS is a new versioned file; a
# replaced stage would lose every release's code
_CREATED_ONCE = ("table", "stage")

Status = Literal["created", "changed", "unchanged", "real Snowflake only"]


class DeployError(Exception):
    """An object could not be applied; the ones before it stay applied."""


@dataclass(frozen=True)
class Outcome:
    obj: SqlObject
    status: Status
    note: str = ""


def digest(obj: SqlObject) -> str:
    """What the ledger records of ``obj``: its statements, or its fingerprint."""
    text = obj.fingerprint or "\n;\n".join(obj.statements)
    return hashlib.sha256(text.encode()).hexdigest()


def deploy(warehouse: Warehouse, objects: list[SqlObject]) -> list[Outcome]:
    """Apply ``objects`` in order and say what happened to each."""
    outcomes = []
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        _run(cursor, _LEDGER_DDL, None, "the deployment ledger")
        ledger = _read_ledger(cursor)
        applied: set[tuple[str, str]] = set()  # created or changed in this deploy
        for obj in objects:
            if warehouse.emulated and not obj.embedded:
                outcomes.append(Outcome(obj, "real Snowflake only"))
                continue
            previous = ledger.get((obj.kind, obj.name))
            replaced = [f"{k} {n}" for k, n in obj.grants_on if (k, n) in applied]
            outcome = _apply(cursor, obj, previous, replaced)
            if outcome.status != "unchanged":
                applied.add((obj.kind, obj.name))
                _record(cursor, obj)
            outcomes.append(outcome)
    return outcomes


def _apply(
    cursor: Any, obj: SqlObject, previous: str | None, replaced: list[str]
) -> Outcome:
    """Apply ``obj`` unless it exists as the ledger recorded it and none of the
    objects it grants on (``replaced``) was created or changed in this deploy.
    """
    exists = _exists(cursor, obj, previous)
    current = digest(obj)
    if obj.kind in _CREATED_ONCE and exists:
        note = (
            ""
            if previous in (None, current)
            else "exists with an older definition: change it with a new versioned file"
        )
        return Outcome(obj, "unchanged", note)
    if exists and previous == current and not replaced:
        return Outcome(obj, "unchanged")
    for statement in obj.statements:
        _run(cursor, statement, None, f"{obj.kind} {obj.name} ({obj.version})")
    note = (
        f"applied again: {', '.join(replaced)} was created or replaced"
        if exists and previous == current
        else ""
    )
    return Outcome(obj, "changed" if exists else "created", note)


def _exists(cursor: Any, obj: SqlObject, previous: str | None) -> bool:
    """Whether the object exists (grants and comments: whether the ledger says they
    were made).
    """
    if obj.kind == "table":
        _run(
            cursor,
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = %s",
            (obj.name,),
            f"looking up {obj.name}",
        )
        return bool(cursor.fetchone()[0])
    if obj.kind in _SHOW:
        _run(cursor, _SHOW[obj.kind], (obj.name,), f"looking up {obj.name}")
        return bool(cursor.fetchall())
    if obj.kind == "stage_files":
        return _staged(cursor, obj)
    # grants, comments: applying them again is harmless; the ledger says
    return previous is not None


def _staged(cursor: Any, obj: SqlObject) -> bool:
    """Whether every file ``obj`` uploads is on its stage (``LIST @stage``); its
    fingerprint has a line ``<path on the stage> <sha256>`` per file.
    """
    stage = obj.name.split("/", 1)[0]
    wanted = {line.split()[0] for line in obj.fingerprint.splitlines()}
    _run(cursor, f"LIST @{stage}", None, f"listing @{stage}")
    # LIST names each file <stage in lower case>/<path on the stage>
    listed = {str(row[0]).split("/", 1)[-1] for row in cursor.fetchall()}
    return wanted <= listed


def _read_ledger(cursor: Any) -> dict[tuple[str, str], str]:
    _run(
        cursor,
        f"SELECT OBJECT_KIND, OBJECT_NAME, SQL_SHA256 FROM {LEDGER}",
        None,
        "reading the deployment ledger",
    )
    return {(kind, name): sha for kind, name, sha in cursor.fetchall()}


def _record(cursor: Any, obj: SqlObject) -> None:
    where = "recording the deployment"
    key = (obj.kind, obj.name)
    _run(cursor, "BEGIN", None, where)
    _run(
        cursor,
        f"DELETE FROM {LEDGER} WHERE OBJECT_KIND = %s AND OBJECT_NAME = %s",
        key,
        where,
    )
    _run(
        cursor,
        f"INSERT INTO {LEDGER} VALUES (%s, %s, %s, %s, {UTC_NOW_SQL})",
        (*key, obj.version, digest(obj)),
        where,
    )
    _run(cursor, "COMMIT", None, where)


def _run(cursor: Any, sql: str, params: Any, what: str) -> None:
    try:
        cursor.execute(sql, params)
    except Exception as exc:
        errno = getattr(exc, "errno", None)
        message = str(exc).strip().splitlines()[0]
        if errno in _PRIVILEGE_ERRNOS or "privilege" in message.lower():
            raise DeployError(
                f"{what}: the role lacks a privilege ({message}); grant it to the "
                "deploying role (snowflake.role) or deploy with a role that has it"
            ) from exc
        raise DeployError(f"{what}: {message}") from exc
