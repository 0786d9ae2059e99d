"""The drift check: recent data against the serving model's training baseline.

``python -m monitoring check`` reads a batch of recent data, the endpoint's data
capture (``--source capture``, the last ``monitoring.lookback_hours``) or the scores
written back to Snowflake's PREDICTIONS table with their features recomputed for that
as-of date (``--source predictions``), or a Parquet/CSV file (``--data``), and judges it
against the baseline registered with the model package the endpoint serves
(``monitoring.drift``). Once labels have arrived in Snowflake for an as-of date that was
scored, it also measures the AUC on those rows against the model's test AUC.

It writes ``constraint_violations.json`` (Model Monitor's format), ``statistics.json``
of the checked data, ``drift.json`` (our summary, which the dashboard and the retraining
trigger read) and ``report.html``, into ``--output-dir`` and under
``<artifact_root>/monitoring/<endpoint>/<checked-at>/`` in the object store.

Exit codes: 0 no violation, 1 violations found, 2 nothing was judged (bad
configuration or input, too few rows, no baseline). ``--exit-zero`` keeps 0 for
violations, for a pipeline step that branches on ``drift.json`` instead.

Run by Model Monitor as a bring-your-own container, it reads that contract's
environment (``dataset_source``, ``baseline_statistics``, ``baseline_constraints``,
``output_path``, ``start_time``, ``end_time``, ``sagemaker_endpoint_name``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import stack.resources
from features.schema import load_feature_set
from monitoring import formats
from monitoring.baseline import (
    CONSTRAINTS_FILE,
    PREDICTION,
    PREDICTION_FILE,
    STATISTICS_FILE,
    Baseline,
)
from monitoring.decision import DRIFT_FILE, results_prefix
from monitoring.drift import DriftResult, InsufficientData, compare
from monitoring.report import render_report
from pipelines.console import Console, location
from pipelines.process_gc import run_process
from pipelines.spec import Output, ProcessingSpec, PropertyFile, python_module
from pipelines.step_names import DRIFT_CHECK, DRIFT_REPORT
from processing.contract import command_config
from stack.config import Config, ConfigError, validate_identifier
from stack.objectstore import LocalObjectStore, join_uri
from stack.warehouse import WarehouseUnavailable

log = logging.getLogger("monitoring.check")

EXIT_OK, EXIT_VIOLATIONS, EXIT_UNJUDGED = 0, 1, 2
VIOLATIONS_FILE = "constraint_violations.json"
REPORT_FILE = "report.html"
PIPELINE_OUTPUT = "/opt/ml/processing/monitoring"

# The monitoring pipeline's first step. Never cached: what the endpoint saw changes
# between executions with the same arguments. The check exits 1 when it finds
# violations (for people and CI); a pipeline step must succeed then, so that
# CheckDrift can act on the report: --exit-zero.
SPEC = ProcessingSpec(
    name=DRIFT_CHECK,
    command=python_module("monitoring", "check"),
    arguments=("--output-dir", PIPELINE_OUTPUT, "--exit-zero"),
    outputs=(Output("monitoring", PIPELINE_OUTPUT),),
    property_files=(PropertyFile(DRIFT_REPORT, "monitoring", DRIFT_FILE),),
    sections=(
        "resources",
        "aws",
        "snowflake",
        "sagemaker",
        "features",
        "writeback",
        "deployment",
        "monitoring",
    ),
    retried=False,
)


class CheckError(Exception):
    """Nothing could be judged: the reason is the message."""


@dataclass
class CheckOutcome:
    drift: dict[str, Any]
    violations: list[dict[str, str]]
    output_dir: Path
    published_uri: str | None


# --- the baseline -----------------------------------------------------------------


def baseline_of_package(store: Any, package: Any) -> Baseline:
    """The baseline registered with ``package`` (its DriftCheckBaselines), with the
    prediction baseline beside its statistics when there is one.
    """
    if not package.baseline_statistics_uri or not package.baseline_constraints_uri:
        raise CheckError(
            f"model package {package.arn} has no drift-check baseline "
            "(DriftCheckBaselines.ModelDataQuality): register it from a pipeline "
            "with the Baseline step, or pass --baseline-dir"
        )

    def load(uri: str) -> Any:
        try:
            return json.loads(store.read_bytes(uri))
        except json.JSONDecodeError as exc:
            raise formats.FormatError(f"{uri}: not JSON ({exc})") from None

    statistics_uri = package.baseline_statistics_uri
    prediction_uri = statistics_uri.rsplit("/", 1)[0] + "/" + PREDICTION_FILE
    try:
        prediction = load(prediction_uri)
    except Exception:  # a baseline from Model Monitor's own analyzer has none
        prediction = None
    return Baseline.from_documents(
        load(statistics_uri), load(package.baseline_constraints_uri), prediction
    )


def serving_package(resources: Any, arn: str | None) -> Any:
    config = resources.config
    if arn is None:
        arn = resources.endpoints.serving_package(config.sagemaker.endpoint_name)
    if arn is not None:
        return resources.registry.get(arn)
    package = resources.registry.latest_approved(config.sagemaker.model_package_group)
    if package is None:
        raise CheckError(
            f"no model to check: endpoint {config.sagemaker.endpoint_name} serves "
            f"none and {config.sagemaker.model_package_group} has no Approved version"
        )
    return package


# --- the data ---------------------------------------------------------------------


def capture_window(
    config: Config, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(hours=config.monitoring.lookback_hours)
    if start >= end:
        raise CheckError(f"the window is empty: {start} is not before {end}")
    return start, end


def capture_frame(
    store: Any,
    capture_uri: str,
    endpoint: str,
    start: datetime,
    end: datetime,
    schema: Any = None,
    variant: str = "AllTraffic",
) -> pd.DataFrame:
    from monitoring.capture import read_capture

    frame = read_capture(
        store, capture_uri, endpoint, start, end, schema=schema, variant=variant
    )
    skipped = frame.attrs.get("undecodable", 0)
    if skipped:
        log.warning("%d captured events could not be decoded and were skipped", skipped)
    return frame


def _predictions_sql(feature_sql: str, table: str, entity: str) -> str:
    validate_identifier(table, "writeback.table")
    validate_identifier(entity, "entity id column")
    body = feature_sql.strip().rstrip(";")
    return (
        f"SELECT f.*, p.SCORE AS {PREDICTION}, p.MODEL_PACKAGE_ARN AS scored_by\n"
        f"FROM (\n{body}\n) AS f\n"
        f"JOIN {table} AS p ON p.{entity} = f.{entity}"
        " AND p.AS_OF_DATE = TO_DATE(%(as_of)s)"
    )


def _scored_dates(cursor: Any, table: str) -> list[date]:
    cursor.execute(f"SELECT DISTINCT AS_OF_DATE FROM {table} ORDER BY AS_OF_DATE DESC")  # nosec B608: table validated
    return [_as_date(row[0]) for row in cursor.fetchall()]


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _table_exists(cursor: Any, table: str) -> bool:
    try:
        cursor.execute(f"SELECT 1 FROM {table} LIMIT 1")  # nosec B608: validated
        cursor.fetchall()
        return True
    except Exception:
        return False


def scored_frame(
    conn: Any, config: Config, feature_set: Any, as_of: date, window_days: int
) -> pd.DataFrame:
    """The features (recomputed for ``as_of``), label and score of each entity
    scored for ``as_of`` in PREDICTIONS.
    """
    from processing.extract import query_features

    sql = _predictions_sql(
        feature_set.sql, config.writeback.table, feature_set.schema.entity_id.upper()
    )
    frame = query_features(
        conn, sql, {"as_of": as_of.isoformat(), "label_window_days": window_days}
    )
    for name in (*feature_set.schema.feature_names, PREDICTION):
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def performance(
    conn: Any,
    config: Config,
    feature_set: Any,
    package: Any,
    window_days: int,
) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """The AUC on the newest scored as-of date whose labels are complete
    (``as_of + label window <= monitoring.labels_through``), against the model's
    test AUC; None when no scored date is labelled yet.
    """
    from sklearn.metrics import roc_auc_score

    settings = config.monitoring
    table = config.writeback.table
    cursor = conn.cursor()
    if not _table_exists(cursor, table):
        return None, []
    labels_through = settings.labels_through or datetime.now(UTC).date()
    labelled = [
        d
        for d in _scored_dates(cursor, table)
        if d + timedelta(days=window_days) <= labels_through
    ]
    if not labelled:
        return None, []
    as_of = labelled[0]
    frame = scored_frame(conn, config, feature_set, as_of, window_days)
    own = frame[frame["scored_by"] == package.arn]
    if len(own) >= settings.min_labelled_rows:
        frame = own
    label = feature_set.schema.label
    labels = pd.to_numeric(frame[label], errors="coerce").to_numpy()
    if len(frame) < settings.min_labelled_rows or len(np.unique(labels)) < 2:
        return None, []
    auc = float(roc_auc_score(labels.astype(int), frame[PREDICTION].to_numpy(float)))
    baseline_auc = _float(package.customer_metadata.get("test_auc"))
    summary = {
        "auc": round(auc, 6),
        "baseline_auc": baseline_auc,
        "labelled_rows": int(len(frame)),
        "as_of_dates": [as_of.isoformat()],
        "scored_by": sorted(str(a) for a in frame["scored_by"].dropna().unique()),
    }
    found = []
    if baseline_auc is not None and baseline_auc - auc > settings.auc_drop_threshold:
        found.append(
            {
                "metric_name": "auc",
                "constraint_check_type": "LessThanThreshold",
                "description": (
                    f"AUC {auc:.4f} on {len(frame):,} rows labelled for "
                    f"{as_of.isoformat()} is below the model's test AUC "
                    f"{baseline_auc:.4f} by more than "
                    f"{settings.auc_drop_threshold} (monitoring.auc_drop_threshold)"
                ),
            }
        )
    return summary, found


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- the check --------------------------------------------------------------------


def judge(
    frame: pd.DataFrame,
    baseline: Baseline,
    config: Config,
    ignore: frozenset[str] = frozenset(),
) -> DriftResult:
    result = compare(frame, baseline, config.monitoring, ignore=ignore)
    formats.check(
        {"violations": result.violations}, formats.VIOLATIONS, VIOLATIONS_FILE
    )
    return result


def write_results(
    directory: Path,
    result: DriftResult,
    drift: dict[str, Any],
    extra_violations: list[dict[str, str]],
) -> list[dict[str, str]]:
    violations = result.violations + extra_violations
    document = {"violations": violations}
    formats.check(document, formats.VIOLATIONS, VIOLATIONS_FILE)
    formats.check(result.statistics, formats.STATISTICS, STATISTICS_FILE)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / VIOLATIONS_FILE).write_text(json.dumps(document, indent=1))
    (directory / STATISTICS_FILE).write_text(json.dumps(result.statistics))
    (directory / DRIFT_FILE).write_text(json.dumps(drift, indent=1))
    (directory / REPORT_FILE).write_text(render_report(drift, violations))
    return violations


def publish(store: Any, prefix: str, directory: Path, checked_at: str) -> str:
    folder = join_uri(prefix, checked_at.replace(":", "-"))
    for name in (VIOLATIONS_FILE, STATISTICS_FILE, DRIFT_FILE, REPORT_FILE):
        store.write_bytes(join_uri(folder, name), (directory / name).read_bytes())
    return folder


def run_check(
    config: Config,
    resources: Any,
    *,
    source: str,
    since: datetime | None = None,
    until: datetime | None = None,
    as_of: date | None = None,
    data: Path | None = None,
    baseline_dir: Path | None = None,
    package_arn: str | None = None,
    output_dir: Path,
    publish_results: bool = True,
) -> CheckOutcome:
    """The whole check; raises CheckError (or InsufficientData, FormatError) when
    nothing could be judged.
    """
    feature_set = load_feature_set(
        config.features.feature_set, config.features.directory
    )
    package = serving_package(resources, package_arn)
    baseline = (
        Baseline.read(baseline_dir)
        if baseline_dir
        else baseline_of_package(resources.store, package)
    )
    window_days = int(
        package.customer_metadata.get("label_window_days")
        or config.features.label_window_days
    )
    window: dict[str, Any] = {}
    ignore = frozenset({"inference_time", "scored_by", feature_set.schema.entity_id})
    if data is not None:
        frame = _read_data(data)
        window = {"file": str(data)}
        source = "file"
    elif source == "capture":
        if not config.deployment.data_capture_s3_uri:
            raise CheckError(
                "deployment.data_capture_s3_uri is not set: the endpoint captures "
                "nothing (use --source predictions)"
            )
        start, end = capture_window(config, since, until)
        frame = capture_frame(
            resources.store,
            config.deployment.data_capture_s3_uri,
            config.sagemaker.endpoint_name,
            start,
            end,
            schema=feature_set.schema,
            variant=config.deployment.variant_name,
        )
        window = {"start": _iso(start), "end": _iso(end)}
    else:
        with resources.warehouse.connect() as conn:
            cursor = conn.cursor()
            if not _table_exists(cursor, config.writeback.table):
                raise CheckError(f"no {config.writeback.table} table to check yet")
            if as_of is None:
                dates = _scored_dates(cursor, config.writeback.table)
                if not dates:
                    raise CheckError(f"{config.writeback.table} holds no scores yet")
                as_of = dates[0]
            frame = scored_frame(conn, config, feature_set, as_of, window_days)
        window = {"as_of": as_of.isoformat()}
        ignore |= {feature_set.schema.label}
    columns = [c for c in frame.columns if c not in ignore]
    result = judge(frame[columns], baseline, config, ignore=ignore)
    perf, perf_violations = _performance_if_reachable(
        resources, config, feature_set, package, window_days
    )
    checked_at = datetime.now(UTC).replace(microsecond=0)
    drift = {
        "checked_at": _iso(checked_at),
        "endpoint": config.sagemaker.endpoint_name,
        "model_package_arn": package.arn,
        "source": source,
        "window": window,
        **result.summary(),
        "performance": perf,
    }
    drift["violations"] = len(result.violations) + len(perf_violations)
    violations = write_results(output_dir, result, drift, perf_violations)
    published = None
    if publish_results:
        published = publish(
            resources.store, results_prefix(config), output_dir, drift["checked_at"]
        )
    return CheckOutcome(drift, violations, output_dir, published)


def _performance_if_reachable(
    resources: Any, config: Config, feature_set: Any, package: Any, window_days: int
) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    try:
        with resources.warehouse.connect() as conn:
            return performance(conn, config, feature_set, package, window_days)
    except WarehouseUnavailable as exc:
        log.warning("no performance check: Snowflake is unreachable (%s)", exc)
        return None, []


def _read_data(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise CheckError(f"no such file: {path}")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", ""))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- the command ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", help="configuration environment (default: local)")
    parser.add_argument("--state-dir", help="the local state folder (state_dir)")
    parser.add_argument(
        "--source",
        choices=("capture", "predictions"),
        help="what to check (default: monitoring.source)",
    )
    parser.add_argument("--since", type=_timestamp, help="capture window start (UTC)")
    parser.add_argument("--until", type=_timestamp, help="capture window end (UTC)")
    parser.add_argument(
        "--as-of", type=date.fromisoformat, help="PREDICTIONS as-of date to check"
    )
    parser.add_argument("--data", type=Path, help="check this Parquet or CSV file")
    parser.add_argument(
        "--baseline-dir", type=Path, help="statistics.json + constraints.json here"
    )
    parser.add_argument("--model-package-arn", help="default: what the endpoint serves")
    parser.add_argument("--output-dir", type=Path, help="also write the results here")
    parser.add_argument(
        "--no-publish", action="store_true", help="do not copy results to the store"
    )
    parser.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even with violations"
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


def _model_monitor_contract(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> argparse.Namespace:
    """Fill the arguments from Model Monitor's bring-your-own-container contract."""
    if "dataset_source" not in environ:
        return args
    args.source = "capture"
    args.output_dir = Path(environ.get("output_path", "/opt/ml/processing/resultdata"))
    for name, value in (("since", "start_time"), ("until", "end_time")):
        if environ.get(value):
            setattr(args, name, _timestamp(environ[value]))
    statistics = environ.get("baseline_statistics")
    if statistics:
        args.baseline_dir = _baseline_folder(
            Path(statistics), Path(environ.get("baseline_constraints", ""))
        )
    args.exit_zero = True  # the violations file is the result
    return args


def _baseline_folder(statistics: Path, constraints: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="baseline-"))
    (folder / STATISTICS_FILE).write_bytes(statistics.read_bytes())
    (folder / CONSTRAINTS_FILE).write_bytes(constraints.read_bytes())
    sibling = statistics.parent / PREDICTION_FILE
    if sibling.exists():
        (folder / PREDICTION_FILE).write_bytes(sibling.read_bytes())
    return folder


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    console = Console(args.log_format)
    args = _model_monitor_contract(args, environ)
    try:
        config = command_config(args.env, {"state_dir": args.state_dir})
        resources = _resources_for_contract(
            stack.resources.build_resources(config), environ
        )
        output = args.output_dir or Path(tempfile.mkdtemp(prefix="drift-"))
        outcome = run_check(
            config,
            resources,
            source=args.source or config.monitoring.source,
            since=args.since,
            until=args.until,
            as_of=args.as_of,
            data=args.data,
            baseline_dir=args.baseline_dir,
            package_arn=args.model_package_arn,
            output_dir=output,
            publish_results=not args.no_publish,
        )
    except (CheckError, ConfigError, InsufficientData, formats.FormatError) as exc:
        console.error(f"drift check: nothing judged: {exc}")
        return EXIT_UNJUDGED
    _show(console, outcome, resources.store)
    if outcome.violations and not args.exit_zero:
        return EXIT_VIOLATIONS
    return EXIT_OK


def _resources_for_contract(resources: Any, environ: Mapping[str, str]) -> Any:
    """Under Model Monitor, the capture is already in ``dataset_source``
    (``<endpoint>/<variant>/yyyy/mm/dd/hh``): read it there, not from S3.
    """
    source = environ.get("dataset_source")
    if not source:
        return resources
    from dataclasses import replace

    folder = Path(source)
    config = resources.config.model_copy(
        update={
            "deployment": resources.config.deployment.model_copy(
                update={"data_capture_s3_uri": f"s3://{folder.name}"}
            )
        }
    )
    local = LocalObjectStore(folder.parent)
    return replace(resources, config=config, store=_SplitStore(local, resources.store))


class _SplitStore:
    """Reads the capture from the contract's folder, everything else from S3."""

    def __init__(self, capture: Any, store: Any) -> None:
        self._capture, self._store = capture, store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def list(self, prefix_uri: str) -> list[str]:
        return self._capture.list(prefix_uri) or self._store.list(prefix_uri)

    def read_bytes(self, uri: str) -> bytes:
        try:
            return self._capture.read_bytes(uri)
        except Exception:
            return self._store.read_bytes(uri)


def _show(console: Any, outcome: CheckOutcome, store: Any) -> None:
    drift = outcome.drift
    drifted = [f["name"] for f in drift["features"] if f["drifted"]]
    console.event(
        "checked",
        f"Checked {drift['rows']:,} rows ({drift['source']}) of "
        f"{drift['endpoint']} against the baseline of {drift['model_package_arn']}",
        rows=drift["rows"],
        source=drift["source"],
    )
    console.event(
        "drift",
        f"Drifted features: {', '.join(drifted) if drifted else 'none'}",
        drifted=drifted,
    )
    if drift.get("prediction"):
        p = drift["prediction"]
        console.event(
            "prediction",
            f"Prediction PSI {p['psi']:.3f}, mean score {p['mean']:.3f} "
            f"(baseline {p['baseline_mean']:.3f})",
            **p,
        )
    perf = drift.get("performance")
    if perf:
        console.event(
            "performance",
            f"AUC {perf['auc']:.4f} on {perf['labelled_rows']:,} labelled rows "
            f"({', '.join(perf['as_of_dates'])}); test AUC {perf['baseline_auc']}",
            **perf,
        )
    for violation in outcome.violations:
        name = violation.get("feature_name") or violation.get("metric_name")
        console.event(
            "violation",
            f"  {violation['constraint_check_type']}: {name}: "
            f"{violation['description']}",
            **violation,
        )
    if outcome.published_uri:  # a file path locally, the S3 URI on AWS
        report = location(store, join_uri(outcome.published_uri, REPORT_FILE))
    else:
        report = str(outcome.output_dir / REPORT_FILE)
    console.event(
        "result",
        f"{len(outcome.violations)} violation(s); report: {report}",
        violations=len(outcome.violations),
        report=report,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m monitoring check")
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run_process(main)
