"""Whether the served model should be retrained, and on which data window: the
decision of ``python -m monitoring retrain``, and what it is made of.

The model is retrained when

- the newest drift check found violations after the serving model was registered
  (``monitoring.retrain_on_violation``), or
- the data window has moved at least ``monitoring.retrain_every_days`` days past the
  serving model's training as-of date (the schedule),

and the new as-of date, ``(monitoring.labels_through or today) -
features.label_window_days`` (the newest date whose labels are complete), is after the
serving model's. ``force`` retrains whatever the triggers and dates say.

The serving model is the package behind the endpoint, else the newest Approved version
of the model package group; its as-of date comes from the package's customer metadata,
which the pipeline's Register step writes. ``decide`` reads nothing and starts nothing;
``serving_model`` and ``newest_drift``/``read_drift`` read what it decides on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from stack.config import Config, MonitoringConfig
from stack.objectstore import ObjectStore, ObjectStoreError, join_uri
from stack.registry import ModelPackage
from stack.resources import Resources

DRIFT_FILE = "drift.json"
VIOLATION, SCHEDULE, FORCED = "violation", "schedule", "force"


class InputError(Exception):
    """A model, drift report or argument that cannot be used; nothing was started."""


@dataclass(frozen=True)
class ServingModel:
    """The model the endpoint serves (or would serve), with its training window."""

    arn: str
    version: int
    registered_at: datetime
    as_of: date
    label_window_days: int | None
    found_by: str  # "endpoint" or "registry"


@dataclass(frozen=True)
class DriftReport:
    """The parts of a drift check's ``drift.json`` the decision reads."""

    uri: str
    checked_at: datetime
    violations: int
    model_package_arn: str | None = None


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    as_of: date  # the AsOfDate a new execution trains on
    triggers: tuple[str, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)


# --- the decision (pure) --------------------------------------------------------------


def new_as_of(labels_through: date, label_window_days: int) -> date:
    """The newest as-of date whose label window has ended by ``labels_through``."""
    return labels_through - timedelta(days=label_window_days)


def decide(
    model: ServingModel | None,
    drift: DriftReport | None,
    settings: MonitoringConfig,
    label_window_days: int,
    today: date,
    force: bool = False,
) -> Decision:
    """Whether to retrain, why, and on which window; reads nothing, starts nothing."""
    reference = settings.labels_through or today
    as_of = new_as_of(reference, label_window_days)
    parameters = {
        "AsOfDate": as_of.isoformat(),
        "LabelWindowDays": str(label_window_days),
    }
    window = (
        f"labels complete through {reference} "
        f"({'monitoring.labels_through' if settings.labels_through else 'today'}), "
        f"a {label_window_days}-day label window: AsOfDate {as_of}"
    )
    if model is None:
        if force:
            reason = f"forced (--force), no model serves yet; {window}"
            return Decision(True, reason, as_of, (FORCED,), parameters)
        return Decision(
            False,
            "no model serves the endpoint and the group has no Approved version: "
            "nothing to retrain (run the pipeline first, or pass --force)",
            as_of,
        )
    triggers: list[str] = []
    reasons: list[str] = []
    if force:
        triggers.append(FORCED)
        reasons.append("forced (--force)")
    reasons.append(_violation_reason(model, drift, settings, triggers))
    reasons.append(_schedule_reason(model, as_of, settings, triggers))
    said = "; ".join(r for r in reasons if r)
    if not triggers:
        return Decision(False, f"nothing to do: {said}", as_of)
    if as_of <= model.as_of and not force:
        return Decision(
            False,
            f"nothing to do: {said}; but {window}, which is not after version "
            f"{model.version}'s as-of date {model.as_of}: no newer labels to learn "
            "from (--force retrains anyway)",
            as_of,
            tuple(triggers),
        )
    return Decision(True, f"{said}; {window}", as_of, tuple(triggers), parameters)


def _violation_reason(
    model: ServingModel,
    drift: DriftReport | None,
    settings: MonitoringConfig,
    triggers: list[str],
) -> str:
    if drift is None:
        return "no drift check has run yet"
    if drift.violations <= 0:
        checked = iso_utc(drift.checked_at)
        return f"the newest drift check ({checked}) found no violation"
    found = (
        f"the drift check at {iso_utc(drift.checked_at)} found "
        f"{drift.violations} violation(s)"
    )
    if drift.checked_at <= model.registered_at:
        return (
            f"{found}, before version {model.version} was registered "
            f"({iso_utc(model.registered_at)})"
        )
    if not settings.retrain_on_violation:
        return f"{found}, but monitoring.retrain_on_violation is off"
    triggers.append(VIOLATION)
    return (
        f"{found} after version {model.version} was registered "
        f"({iso_utc(model.registered_at)})"
    )


def _schedule_reason(
    model: ServingModel, as_of: date, settings: MonitoringConfig, triggers: list[str]
) -> str:
    every = settings.retrain_every_days
    if every is None:
        return "no retraining schedule (monitoring.retrain_every_days is unset)"
    moved = (as_of - model.as_of).days
    if moved >= every:
        triggers.append(SCHEDULE)
        return (
            f"schedule: the data window has moved {moved} days past version "
            f"{model.version}'s as-of date {model.as_of} "
            f"(monitoring.retrain_every_days is {every})"
        )
    return (
        f"the schedule is not due: the data window has moved {moved} of {every} days "
        f"past version {model.version}'s as-of date {model.as_of}"
    )


def iso_utc(moment: datetime) -> str:
    """``moment`` as the reports write it: UTC, to the second, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what the decision reads ----------------------------------------------------------


def serving_model(resources: Resources) -> ServingModel | None:
    """The package the endpoint serves, else the group's newest Approved version."""
    config = resources.config
    found_by = "endpoint"
    arn = resources.endpoints.serving_package(config.sagemaker.endpoint_name)
    package: ModelPackage | None
    if arn:
        package = resources.registry.get(arn)
    else:
        found_by = "registry"
        package = resources.registry.latest_approved(
            config.sagemaker.model_package_group
        )
    return None if package is None else model_of(package, found_by)


def model_of(package: ModelPackage, found_by: str) -> ServingModel:
    """The training window recorded on ``package``; InputError if it has none."""
    metadata = package.customer_metadata
    text = metadata.get("as_of_date", "")
    try:
        as_of = date.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"model package {package.arn} has no as_of_date in its customer metadata "
            f"(got {text!r}): it was not registered by this pipeline; retrain with "
            "--force, or pass AsOfDate to python -m pipelines.run yourself"
        ) from None
    window = metadata.get("label_window_days", "")
    return ServingModel(
        arn=package.arn,
        version=package.version,
        registered_at=_timestamp(package.created_at, f"{package.arn} created_at"),
        as_of=as_of,
        label_window_days=int(window) if window.isdigit() else None,
        found_by=found_by,
    )


def results_prefix(config: Config) -> str:
    """Where the drift checks publish their results, one folder per check."""
    return join_uri(config.artifact_root, "monitoring", config.sagemaker.endpoint_name)


def newest_drift(store: ObjectStore, prefix: str) -> DriftReport | None:
    """The newest ``<prefix>/<check>/drift.json`` (folders are named by check time)."""
    depth = prefix.rstrip("/").count("/") + 2
    reports = [
        uri
        for uri in store.list(prefix.rstrip("/") + "/")
        if uri.endswith("/" + DRIFT_FILE) and uri.count("/") == depth
    ]
    return read_drift(store, max(reports)) if reports else None


def read_drift(store: ObjectStore, uri: str) -> DriftReport:
    """One ``drift.json``; InputError naming the file if it is not one."""
    try:
        data = json.loads(store.read_bytes(uri))
    except ObjectStoreError as exc:
        raise InputError(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{uri} is not JSON: {exc}") from None
    return drift_from(data, uri)


def drift_from(data: Any, uri: str) -> DriftReport:
    if not isinstance(data, dict):
        raise InputError(f"{uri}: a drift report is a JSON object")
    violations = data.get("violations")
    if isinstance(violations, bool) or not isinstance(violations, int):
        raise InputError(
            f"{uri}: 'violations' must be a whole number, got {violations!r}"
        )
    checked_at = _timestamp(data.get("checked_at"), f"{uri} checked_at")
    return DriftReport(uri, checked_at, violations, data.get("model_package_arn"))


def _timestamp(value: Any, what: str) -> datetime:
    """An ISO 8601 time; UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what}: {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
