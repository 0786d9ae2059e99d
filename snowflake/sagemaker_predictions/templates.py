"""Render the versioned SQL templates in ``sql/`` into the statements the deployer runs.

Templates hold ``{{name}}`` placeholders. Identifiers come from configuration and are
validated against a strict pattern; the few values that Snowflake DDL takes as
literals (the API Gateway URL and prefixes, the role ARN, the schedule) are validated
against their own patterns by ``stack.config`` and rendered as escaped string literals,
because Snowflake DDL has no bind variables. Data never reaches this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from features import FeatureSet
from snowflake.sagemaker_predictions.procedure_code import (
    HANDLER,
    PACKAGES,
    RUNTIME_VERSION,
    ProcedureCode,
)
from stack.config import Config, ConfigError, validate_identifier

SQL_DIR = Path(__file__).parent / "sql"
PAYLOAD_LIMIT_BYTES = 5 * 1024 * 1024  # under InvokeEndpoint's 6 MB, with headroom
# The longest JSON a feature value can take ("-1.7976931348623157e+308,") and the
# row-number prefix of a Snowflake external-function row ('[65535,' ... '],').
_MAX_VALUE_BYTES = 25
_ROW_OVERHEAD_BYTES = 10
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# The current UTC time and date whatever the session's TIMEZONE: CURRENT_TIMESTAMP()
# and CURRENT_DATE() are in the session's time zone (an account default).
UTC_NOW_SQL = "CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ"
UTC_TODAY_SQL = "CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::DATE"
_FILE = re.compile(r"^V(\d{3})__(\w+)\.sql$")


@dataclass(frozen=True)
class SqlObject:
    """One Snowflake object (or set of grants) as rendered statements."""

    version: str  # the template file, e.g. V001__predictions_table.sql
    # table, api_integration, external_function, stage, stage_files, procedure, task,
    # grants, comment
    kind: str
    name: str
    statements: tuple[str, ...]
    # The embedded Snowflake (fakesnow 0.12) cannot parse CREATE API INTEGRATION,
    # EXTERNAL FUNCTION, PROCEDURE or TASK: those exist only in real Snowflake (and
    # so does the procedure's code stage, see _KINDS).
    embedded: bool
    # (kind, name) of the objects whose grants this one holds: applied again whenever
    # one of them is created or replaced, whatever the ledger says of this one
    grants_on: tuple[tuple[str, str], ...] = ()
    # What the ledger records when the statements alone do not say what was applied
    # (uploads name a file on this machine; the fingerprint names its content)
    fingerprint: str = ""


# template file -> (kind, runs on the embedded Snowflake)
_KINDS = {
    "predictions_table": ("table", True),
    "api_integration": ("api_integration", False),
    "external_function": ("external_function", False),
    # fakesnow runs CREATE STAGE, PUT and LIST, but keeps no stage from one session to
    # the next: the code stage exists only in real Snowflake, as the procedure does
    "code_stage": ("stage", False),
    "procedure_code": ("stage_files", False),
    "score_procedure": ("procedure", False),
    "task": ("task", False),
    "grants": ("grants", False),
    "score_comment": ("comment", True),
}


def max_batch_rows(feature_count: int, limit: int = PAYLOAD_LIMIT_BYTES) -> int:
    """The most rows whose external-function JSON surely fits in ``limit`` bytes."""
    return limit // (_ROW_OVERHEAD_BYTES + feature_count * _MAX_VALUE_BYTES)


def sql_literal(value: str) -> str:
    """A single-quoted Snowflake string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def predictions_ddl(table: str, entity_column: str, entity_type: str) -> str:
    """The PREDICTIONS DDL from its template (what the write-back job ensures)."""
    values = {
        "table": validate_identifier(table, "writeback.table"),
        "entity_column": validate_identifier(entity_column, "entity id column"),
        "entity_type": entity_type,
    }
    path = SQL_DIR / "V001__predictions_table.sql"
    (statement,) = split_statements(_fill(path.read_text(), values, path))
    return statement


def render(
    config: Config,
    feature_set: FeatureSet,
    code: ProcedureCode,
    *,
    placeholders: bool = False,
) -> list[SqlObject]:
    """Every object in dependency order (the file numbers order them; each file is
    the object's desired state, applied again when its text changes, not a migration
    run once).

    Args:
        code: the scoring procedure's code and settings, built on this machine
            (``procedure_code.build_procedure_code``).
        placeholders: render unset account values (API URL, role ARN) as visible
            placeholders, for ``--dry-run``; otherwise they are a ConfigError.
    """
    values = {
        **_values(config, feature_set, placeholders),
        **_code_values(config, code),
    }
    objects = []
    for path in sorted(SQL_DIR.glob("V*.sql")):
        match = _FILE.match(path.name)
        if not match or match.group(2) not in _KINDS:
            raise ConfigError(f"unexpected SQL template {path.name}")
        kind, embedded = _KINDS[match.group(2)]
        if kind == "grants" and not config.snowflake_objects.grant_role:
            continue
        statements = tuple(split_statements(_fill(path.read_text(), values, path)))
        grants_on = (
            (("table", values["table"]), ("external_function", values["function"]))
            if kind == "grants"
            else ()
        )
        objects.append(
            SqlObject(
                path.name,
                kind,
                values[_NAME_KEY[kind]],
                statements,
                embedded,
                grants_on,
                code.fingerprint if kind == "stage_files" else "",
            )
        )
    return objects


_NAME_KEY = {
    "table": "table",
    "api_integration": "api_integration",
    "external_function": "function",
    "stage": "code_stage",
    "stage_files": "code_files",
    "procedure": "procedure",
    "task": "task",
    "grants": "grant_role",
    "comment": "table",
}


def _values(config: Config, feature_set: FeatureSet, placeholders: bool) -> dict:
    objects = config.snowflake_objects
    schema = feature_set.schema
    features = [validate_identifier(f.upper(), "feature") for f in schema.feature_names]
    bound = max_batch_rows(len(features))
    batch = objects.max_batch_rows or bound
    if batch > bound:
        raise ConfigError(
            f"snowflake_objects.max_batch_rows {batch} could exceed the "
            f"{PAYLOAD_LIMIT_BYTES:,}-byte payload limit with {len(features)} "
            f"features (at most {bound})"
        )

    def account_value(value: str | None, key: str) -> str:
        if value:
            return value
        if placeholders:
            return f"<unset: snowflake_objects.{key}>"
        raise ConfigError(
            f"snowflake_objects.{key} is not set (set it in conf/{config.env}.yaml "
            f"or MLOPS_SNOWFLAKE_OBJECTS__{key.upper()})"
        )

    prefixes = objects.api_allowed_prefixes or [
        account_value(None, "api_allowed_prefixes")
    ]
    warehouse = config.snowflake.warehouse
    return {
        "table": validate_identifier(config.writeback.table, "writeback.table"),
        "entity_column": validate_identifier(schema.entity_id.upper(), "entity id"),
        "entity_type": config.writeback.entity_type,
        "database": config.snowflake.database,
        "schema": config.snowflake.schema_name,
        "api_integration": objects.api_integration,
        "api_aws_role_arn": sql_literal(
            account_value(objects.api_aws_role_arn, "api_aws_role_arn")
        ),
        "api_allowed_prefixes": ", ".join(sql_literal(p) for p in prefixes),
        "api_url": sql_literal(account_value(objects.api_url, "api_url")),
        "function": objects.function,
        "function_arguments": ", ".join(f"{f} FLOAT" for f in features),
        "function_types": ", ".join("FLOAT" for _ in features),
        "label_window_days": str(int(config.features.label_window_days)),
        "max_batch_rows": str(batch),
        "procedure": objects.procedure,
        "task": objects.task,
        "task_warehouse": (
            f"WAREHOUSE = {validate_identifier(warehouse, 'snowflake.warehouse')}"
            if warehouse
            else "USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL'"
        ),
        "schedule": sql_literal(objects.schedule),
        "grant_role": objects.grant_role or "",
        "utc_today": UTC_TODAY_SQL,
    }


def _code_values(config: Config, code: ProcedureCode) -> dict:
    """The code stage, the upload and the procedure's Python clauses."""
    stage = config.snowflake_objects.code_stage
    archive, settings = code.staged(stage)
    return {
        "code_stage": stage,
        "code_folder": code.folder,
        "code_files": f"{stage}/{code.folder}",
        "archive_uri": sql_literal(code.archive.resolve().as_uri()),
        "settings_uri": sql_literal(code.settings.resolve().as_uri()),
        "runtime_version": sql_literal(RUNTIME_VERSION),
        "procedure_packages": ", ".join(sql_literal(p) for p in PACKAGES),
        "procedure_imports": f"{sql_literal(archive)}, {sql_literal(settings)}",
        "handler": sql_literal(HANDLER),
        "procedure_comment": sql_literal(code.description),
    }


def _fill(text: str, values: dict, path: Path) -> str:
    def value(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"{path.name}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(value, text)


def split_statements(text: str) -> list[str]:
    """Statements end with ``;`` at the end of a line, outside ``$$`` bodies; comment
    lines between statements are dropped.
    """
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in text.splitlines():
        if not current and not in_body and (not line.strip() or line.startswith("--")):
            continue
        current.append(line)
        in_body ^= line.count("$$") % 2 == 1
        if not in_body and line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if current:
        raise ConfigError("a SQL template ends without ';'")
    return statements
