"""What the dashboard shows, read from the environment's resources.

No Streamlit here: each function takes what it reads (the pipeline service, the object
store, the model registry, the warehouse) and returns plain data (DataFrames and
small dataclasses), so it is tested without a browser and the pages only render. An
outside system that cannot be read raises ``SourceUnavailable`` with a one-line reason,
which a page shows instead of a traceback; "nothing there yet" is an empty result, not
an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from pipelines.service import PipelineService, PipelineServiceError, seconds_between
from stack.config import Config, ConfigError, validate_identifier
from stack.objectstore import ObjectStore, ObjectStoreError, join_uri
from stack.registry import ModelRegistry, RegistryError
from stack.warehouse import Warehouse, WarehouseUnavailable

EXECUTION_COLUMNS = [
    "execution", "status", "started_at", "ended_at", "duration_seconds", "attempts",
    "failed_step", "as_of_date", "parameters",
]  # fmt: skip
STEP_COLUMNS = [
    "step", "type", "status", "started_at", "duration_seconds", "cached_from",
    "outcome", "failure_reason",
]  # fmt: skip
VERSION_COLUMNS = [
    "version", "serving", "approval_status", "created_at", "test_auc", "pr_auc",
    "log_loss", "f1", "as_of_date", "pipeline_execution_id", "approval_description",
    "arn",
]  # fmt: skip
# evaluation.json (processing.evaluate): binary_classification_metrics.<name>.value
_EVALUATION_METRICS = ("pr_auc", "log_loss", "f1")
PSI_COLUMNS = ["checked_at", "source", "feature", "psi"]
FEATURE_DRIFT_COLUMNS = [
    "feature", "psi", "ks_statistic", "ks_p_value", "missing_fraction",
    "baseline_missing_fraction", "out_of_range_fraction", "drifted",
]  # fmt: skip
VIOLATION_COLUMNS = ["feature_name", "constraint_check_type", "description"]
HISTOGRAM_COLUMNS = ["bin_start", "bin_end", "model_package", "rows"]
BY_MODEL_COLUMNS = [
    "model_package", "rows", "mean_score", "min_score", "max_score", "last_scored_at",
    "model_package_arn",
]  # fmt: skip


class SourceUnavailable(Exception):
    """An outside system (SageMaker, S3, Snowflake, the registry) could not be read."""


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """The errors of the systems we read, caught at this module's edge only."""
    # imported here: the connector is slow to import and only some pages need it
    from botocore.exceptions import BotoCoreError, ClientError
    from snowflake.connector.errors import Error as SnowflakeError

    return (
        PipelineServiceError,
        ObjectStoreError,
        RegistryError,
        WarehouseUnavailable,
        OSError,
        BotoCoreError,
        ClientError,
        SnowflakeError,
    )


@contextmanager
def _reading(what: str) -> Iterator[None]:
    try:
        yield
    except SourceUnavailable:
        raise
    except _unavailable_errors() as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise SourceUnavailable(f"cannot read {what}: {text}") from exc


# -- pipeline executions ------------------------------------------------------------


def executions(pipelines: PipelineService, limit: int) -> pd.DataFrame:
    """The newest ``limit`` executions, newest first (``EXECUTION_COLUMNS``); the
    frame's ``attrs["unreadable"]``: records that could not be read.
    """
    with _reading(f"the executions in {pipelines.where}"):
        listed = pipelines.list(limit)
    rows = [
        {
            "execution": e.execution_id,
            "status": e.status,
            "started_at": e.started_at,
            "ended_at": e.ended_at,
            "duration_seconds": seconds_between(e.started_at, e.ended_at),
            "attempts": e.attempts,
            "failed_step": e.failed_step.name if e.failed_step else None,
            "as_of_date": (e.parameters or {}).get("AsOfDate"),
            # SageMaker's listing has no parameters: its display name stands there
            "parameters": e.display_name
            if e.parameters is None
            else json.dumps(e.parameters, sort_keys=True, default=str),
        }
        for e in listed
    ]
    frame = pd.DataFrame(rows, columns=EXECUTION_COLUMNS)
    frame.attrs["unreadable"] = listed.unreadable
    return frame


def steps(pipelines: PipelineService, execution: str) -> pd.DataFrame:
    """The steps of one execution, in the order they ran (``STEP_COLUMNS``)."""
    with _reading(f"execution {execution}"):
        described = pipelines.describe(execution)
    rows = [
        {
            "step": s.name,
            "type": s.type,
            "status": s.status,
            "started_at": s.started_at,
            "duration_seconds": s.duration_seconds,
            "cached_from": s.cached_from,
            "outcome": s.outcome,
            "failure_reason": s.failure_reason,
        }
        for s in described.steps
    ]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


# -- model versions -----------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What the endpoint serves: its status (None: no such endpoint) and the model
    package of its current model (None: not from a package).
    """

    endpoint: str
    status: str | None = None
    package_arn: str | None = None

    @property
    def now(self) -> str | None:
        """The package served at this moment: only an InService endpoint serves."""
        return self.package_arn if self.status == "InService" else None


def serving(endpoints: Any, endpoint_name: str) -> Serving:
    """The environment's endpoint (``stack.endpoints``) and the package it serves."""
    with _reading(f"endpoint {endpoint_name}"):
        info = endpoints.describe(endpoint_name)
        if info is None:
            return Serving(endpoint_name)
        return Serving(
            endpoint_name, info.status, endpoints.serving_package(endpoint_name)
        )


def model_versions(
    registry: ModelRegistry,
    group: str,
    store: ObjectStore | None = None,
    serving_arn: str | None = None,
) -> pd.DataFrame:
    """Every version of ``group``, newest first, with its approval status and metrics.

    The test AUC and as-of date come from the package's customer metadata (the
    pipeline's Register step sets them); with ``store``, the other test metrics come
    from the package's evaluation report (``ModelQuality.Statistics``), NaN where it
    cannot be read. ``serving`` marks the version whose ARN is ``serving_arn``.
    """
    with _reading(f"the model registry (group {group})"):
        packages = registry.list_versions(group)
    rows = []
    for package in reversed(packages):
        meta = package.customer_metadata
        row: dict[str, Any] = {
            "version": package.version,
            "serving": package.arn == serving_arn,
            "approval_status": package.approval_status,
            "created_at": package.created_at,
            "test_auc": _float(meta.get("test_auc")),
            "as_of_date": meta.get("as_of_date"),
            "pipeline_execution_id": meta.get("pipeline_execution_id"),
            "approval_description": package.approval_description,
            "arn": package.arn,
        }
        row.update(_evaluation_metrics(store, package.metrics_uri))
        rows.append(row)
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def _evaluation_metrics(store: ObjectStore | None, uri: str | None) -> dict[str, float]:
    missing = {name: float("nan") for name in _EVALUATION_METRICS}
    if store is None or not uri:
        return missing
    unreadable: tuple[type[BaseException], ...] = (
        *_unavailable_errors(),
        ValueError,
        KeyError,
        TypeError,
    )
    try:
        metrics = json.loads(store.read_bytes(uri))["binary_classification_metrics"]
        return {n: _float(metrics[n]["value"]) for n in _EVALUATION_METRICS}
    except unreadable:
        return missing  # a version registered without a readable report


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# -- drift --------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    """One drift check: its ``drift.json`` and the files beside it."""

    uri: str
    checked_at: pd.Timestamp
    document: dict[str, Any]

    @property
    def folder(self) -> str:
        return self.uri.rsplit("/", 1)[0]

    @property
    def report_uri(self) -> str:
        return join_uri(self.folder, "report.html")

    @property
    def violations_uri(self) -> str:
        return join_uri(self.folder, "constraint_violations.json")

    @property
    def violations(self) -> int:
        return int(self.document.get("violations") or 0)

    @property
    def source(self) -> str:
        """What was checked: ``capture``, ``predictions`` or ``file``."""
        return str(self.document.get("source") or "unknown")

    @property
    def window(self) -> str:
        """The data the check judged, in words (``monitoring.check`` records a capture
        window's start and end, an as-of date of PREDICTIONS or a file).
        """
        window = self.document.get("window") or {}
        if window.get("start") and window.get("end"):
            return f"captured {_minute(window['start'])} to {_minute(window['end'])}"
        if window.get("as_of"):
            return f"scored as of {window['as_of']}"
        if window.get("file"):
            return f"file {window['file']}"
        return "no window recorded"


@dataclass(frozen=True)
class DriftHistory:
    prefix: str
    results: list[DriftResult] = field(default_factory=list)  # oldest first
    unreadable: list[str] = field(default_factory=list)  # URIs, with the reason

    @property
    def latest(self) -> DriftResult | None:
        return self.results[-1] if self.results else None


def drift_prefix(config: Config) -> str:
    """``<artifact_root>/monitoring/<endpoint_name>``, where drift checks write."""
    return join_uri(config.artifact_root, "monitoring", config.sagemaker.endpoint_name)


def drift_history(store: ObjectStore, prefix: str) -> DriftHistory:
    """Every ``<prefix>/<check>/drift.json``, oldest first; unreadable ones listed."""
    base = prefix.rstrip("/") + "/"
    with _reading(f"drift results under {prefix}"):
        listed = store.list(base)
    # one folder per check: <prefix>/<checked-at>/drift.json, nothing deeper
    uris = [u for u in listed if u[len(base) :].count("/") == 1]
    uris = [u for u in uris if u.endswith("/drift.json")]
    results, unreadable = [], []
    for uri in uris:
        try:
            with _reading(uri):
                document = json.loads(store.read_bytes(uri))
            if not isinstance(document, dict) or not isinstance(
                document.get("features"), list
            ):
                raise ValueError("no 'features' list")
            checked_at = pd.Timestamp(document["checked_at"])
        except (SourceUnavailable, ValueError, KeyError, TypeError) as exc:
            unreadable.append(f"{uri}: {exc}")
            continue
        if checked_at.tzinfo is None:
            checked_at = checked_at.tz_localize("UTC")
        results.append(DriftResult(uri, checked_at, document))
    results.sort(key=lambda r: r.checked_at)
    return DriftHistory(prefix, results, unreadable)


def psi_over_time(history: DriftHistory) -> pd.DataFrame:
    """PSI of every feature at every check, one row each (``PSI_COLUMNS``), oldest
    first: a series per feature and source, since capture and PREDICTIONS checks
    judge different data.
    """
    rows = [
        {
            "checked_at": r.checked_at,
            "source": r.source,
            "feature": f.get("name"),
            "psi": _float(f.get("psi")),
        }
        for r in history.results
        for f in r.document["features"]
        if isinstance(f, dict) and f.get("name")
    ]
    return pd.DataFrame(rows, columns=PSI_COLUMNS)


def _minute(instant: str) -> str:
    """``2026-11-24T10:00:00Z`` as ``2026-11-24 10:00 UTC``; other text unchanged."""
    try:
        moment = pd.Timestamp(instant)
    except ValueError:
        return instant
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def feature_drift(result: DriftResult) -> pd.DataFrame:
    """The per-feature figures of one check, drifted features first, then by PSI."""
    rows = [
        {
            "feature": f.get("name"),
            **{c: f.get(c) for c in FEATURE_DRIFT_COLUMNS[1:]},
        }
        for f in result.document["features"]
        if isinstance(f, dict)
    ]
    frame = pd.DataFrame(rows, columns=FEATURE_DRIFT_COLUMNS)
    frame["drifted"] = frame["drifted"].astype("boolean").fillna(False).astype(bool)
    return frame.sort_values(["drifted", "psi"], ascending=[False, False]).reset_index(
        drop=True
    )


def violations(store: ObjectStore, result: DriftResult) -> pd.DataFrame:
    """The check's ``constraint_violations.json`` (Model Monitor's format); when that
    file is missing, the drifted features of ``drift.json``.
    """
    try:
        with _reading(result.violations_uri):
            document = json.loads(store.read_bytes(result.violations_uri))
        items = document.get("violations", []) if isinstance(document, dict) else []
        return pd.DataFrame(
            [
                {c: v.get(c) for c in VIOLATION_COLUMNS}
                for v in items
                if isinstance(v, dict)
            ],
            columns=VIOLATION_COLUMNS,
        )
    except (SourceUnavailable, ValueError):
        drifted = feature_drift(result).query("drifted")
        return pd.DataFrame(
            {
                "feature_name": drifted["feature"],
                "constraint_check_type": "data_drift_check",
                "description": [f"PSI {p:.3f}" for p in drifted["psi"].astype(float)],
            },
            columns=VIOLATION_COLUMNS,
        )


def read_report(store: ObjectStore, uri: str) -> bytes | None:
    """The HTML report's bytes, or None when it is not there."""
    try:
        with _reading(uri):
            return store.read_bytes(uri)
    except SourceUnavailable:
        return None


# -- predictions --------------------------------------------------------------------


def predictions_table(config: Config) -> str:
    """``DATABASE.SCHEMA.TABLE`` of the write-back's scores; identifiers checked."""
    parts = (
        validate_identifier(config.snowflake.database, "snowflake.database"),
        validate_identifier(config.snowflake.schema_name, "snowflake.schema"),
        validate_identifier(config.writeback.table, "writeback.table"),
    )
    return ".".join(parts)


def prediction_dates(warehouse: Warehouse, table: str) -> list[date] | None:
    """The AS_OF_DATEs in ``table``, newest first; None when there is no table."""
    database, schema, name = _split_table(table)
    with _reading(f"Snowflake table {table}"), warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES "
            "WHERE TABLE_CATALOG = %s AND TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database.upper(), schema.upper(), name.upper()),
        )
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            f"SELECT DISTINCT AS_OF_DATE FROM {table} ORDER BY AS_OF_DATE DESC"
        )
        return [_as_date(row[0]) for row in cursor.fetchall() if row[0] is not None]


@dataclass(frozen=True)
class PredictionSummary:
    as_of: date
    histogram: pd.DataFrame  # bin_start, bin_end, model_package, rows
    by_model: pd.DataFrame  # model_package, rows, mean_score, min/max, scored_at

    @property
    def rows(self) -> int:
        return int(self.by_model["rows"].sum()) if len(self.by_model) else 0


def prediction_summary(
    warehouse: Warehouse, table: str, as_of: date, bins: int = 20
) -> PredictionSummary:
    """The score distribution for one as-of date, aggregated inside Snowflake.

    Scores are binned in SQL (``bins`` equal bins over [0, 1]) so a table of millions
    of rows sends back at most ``bins`` rows per model package.
    """
    _split_table(table)
    if not 1 <= bins <= 1000:
        raise ValueError(f"bins must be between 1 and 1000, not {bins}")
    with _reading(f"Snowflake table {table}"), warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT MODEL_PACKAGE_ARN, "
            "LEAST(GREATEST(FLOOR(SCORE * %(bins)s), 0), %(bins)s - 1) AS BIN, "
            f"COUNT(*) FROM {table} "
            "WHERE AS_OF_DATE = TO_DATE(%(as_of)s) AND SCORE IS NOT NULL "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            {"bins": bins, "as_of": as_of.isoformat()},
        )
        binned = cursor.fetchall()
        cursor.execute(
            "SELECT MODEL_PACKAGE_ARN, COUNT(*), AVG(SCORE), MIN(SCORE), MAX(SCORE), "
            f"MAX(SCORED_AT) FROM {table} WHERE AS_OF_DATE = TO_DATE(%(as_of)s) "
            "GROUP BY 1 ORDER BY 2 DESC",
            {"as_of": as_of.isoformat()},
        )
        totals = cursor.fetchall()
    counts = {(arn, int(b)): int(n) for arn, b, n in binned}
    # every bin of every package, zeros included, so the chart's axis is uniform
    histogram = pd.DataFrame(
        [
            {
                "bin_start": b / bins,
                "bin_end": (b + 1) / bins,
                "model_package": package_label(arn),
                "rows": counts.get((arn, b), 0),
            }
            for arn in sorted({arn for arn, _ in counts}, key=str)
            for b in range(bins)
        ],
        columns=HISTOGRAM_COLUMNS,
    )
    by_model = pd.DataFrame(
        [
            {
                "model_package": package_label(arn),
                "rows": int(n),
                "mean_score": _float(mean),
                "min_score": _float(low),
                "max_score": _float(high),
                "last_scored_at": scored,
                "model_package_arn": arn,
            }
            for arn, n, mean, low, high, scored in totals
        ],
        columns=BY_MODEL_COLUMNS,
    )
    return PredictionSummary(as_of, histogram, by_model)


def package_label(arn: str | None) -> str:
    """``churn-models/3`` from a model package ARN (the ARN itself if not one)."""
    if not arn:
        return "(none)"
    return arn.split(":model-package/", 1)[-1]


def _split_table(table: str) -> tuple[str, str, str]:
    parts = table.split(".")
    if len(parts) != 3:
        raise ConfigError(f"{table!r} is not DATABASE.SCHEMA.TABLE")
    for part in parts:
        validate_identifier(part, "table name part")
    return parts[0], parts[1], parts[2]


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
