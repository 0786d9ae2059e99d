"""dashboard.data: what each page shows, read without Streamlit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import boto3
import pandas as pd
import pytest
from botocore.stub import Stubber

from dashboard import data
from pipelines.console import location
from pipelines.remote import SageMakerPipelines
from pipelines.service import LocalPipelines
from stack.config import ConfigError
from stack.endpoints import LocalEndpoints
from stack.objectstore import LocalObjectStore, join_uri
from stack.registry import LocalModelRegistry
from stack.resources import build_pipelines, build_resources, build_warehouse
from stack.warehouse import EmbeddedWarehouse
from tests.dashboard.conftest import (
    EARLIER_AS_OF,
    EXECUTION_ID,
    GROUP,
    LATEST_AS_OF,
    DashboardState,
    drift_document,
    register_versions,
    state_config,
    write_drift_results,
    write_execution,
    write_predictions,
)

# -- executions ---------------------------------------------------------------------


def local_pipelines(state_dir: Path) -> LocalPipelines:
    """The local environment's pipeline service over ``state_dir``."""
    service = build_resources(state_config(state_dir)).pipelines
    assert isinstance(service, LocalPipelines)
    return service


def test_local_executions_newest_first_with_steps(tmp_path: Path) -> None:
    records = tmp_path / "executions"
    write_execution(records, "older")
    newer = write_execution(records, "newer")
    newer.started_at = "2026-11-24T10:00:00+00:00"
    newer.ended_at = "2026-11-24T10:00:30+00:00"
    newer.status = "Succeeded"
    newer.save()
    pipelines = local_pipelines(tmp_path)

    executions = data.executions(pipelines, limit=10)

    assert executions["execution"].tolist() == ["newer", "older"]
    assert executions["status"].tolist() == ["Succeeded", "Failed"]
    assert executions["duration_seconds"].tolist() == [30.0, 90.0]
    assert executions["failed_step"].tolist()[1] == "CheckAuc"
    assert executions["as_of_date"].tolist() == ["2026-03-31"] * 2
    assert data.executions(pipelines, limit=1)["execution"].tolist() == ["newer"]
    steps = data.steps(pipelines, "older")
    assert steps["step"].tolist() == ["Extract", "Train", "CheckAuc"]
    assert steps["type"].tolist() == ["Processing", "Training", "Condition"]
    assert steps["duration_seconds"].tolist() == [12.5, 40.0, 0.1]
    assert (
        steps.set_index("step")
        .loc["CheckAuc", "failure_reason"]
        .startswith("test AUC 0.61")
    )


def test_local_executions_skip_unreadable_records(tmp_path: Path) -> None:
    write_execution(tmp_path / "executions", EXECUTION_ID)
    (tmp_path / "executions" / "broken").mkdir()
    (tmp_path / "executions" / "broken" / "execution.json").write_text("{not json")

    executions = data.executions(local_pipelines(tmp_path), limit=10)

    assert executions["execution"].tolist() == [EXECUTION_ID]
    assert executions.attrs["unreadable"] == 1


def test_local_executions_empty_and_unknown(tmp_path: Path) -> None:
    pipelines = local_pipelines(tmp_path / "missing")
    assert data.executions(pipelines, limit=10).empty
    with pytest.raises(data.SourceUnavailable, match="no execution nope"):
        data.steps(pipelines, "nope")
    with pytest.raises(data.SourceUnavailable):
        data.steps(pipelines, "../etc")


def test_sagemaker_executions_through_the_api(aws_credentials: None) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    arn = (
        "arn:aws:sagemaker:us-east-1:000000000000:pipeline/churn-pipeline/execution/x1"
    )
    started = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    with Stubber(client) as stub:
        stub.add_response(
            "list_pipeline_executions",
            {
                "PipelineExecutionSummaries": [
                    {
                        "PipelineExecutionArn": arn,
                        "PipelineExecutionStatus": "Executing",
                        "StartTime": started,
                        "PipelineExecutionDisplayName": "retrain-2026-06-30",
                    }
                ]
            },
            {
                "PipelineName": "churn-pipeline",
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 5,
            },
        )
        stub.add_response(
            "describe_pipeline_execution",
            {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Executing"},
        )
        stub.add_response(
            "list_pipeline_execution_steps",
            {
                "PipelineExecutionSteps": [
                    {
                        "StepName": "Extract",
                        "StepStatus": "Succeeded",
                        "StartTime": started,
                        "EndTime": started.replace(minute=5),
                    },
                    {"StepName": "Train", "StepStatus": "Executing"},
                ]
            },
        )
        pipelines = SageMakerPipelines(client, "churn-pipeline")
        executions = data.executions(pipelines, limit=5)
        steps = data.steps(pipelines, arn)

    assert executions["execution"].tolist() == [arn]
    assert executions["status"].tolist() == ["Executing"]
    assert executions["parameters"].tolist() == ["retrain-2026-06-30"]
    assert steps["step"].tolist() == ["Extract", "Train"]
    assert steps["duration_seconds"].tolist()[0] == 300.0


def test_sagemaker_errors_become_source_unavailable(aws_credentials: None) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error(
            "list_pipeline_executions",
            "ResourceNotFound",
            "Pipeline churn-pipeline does not exist",
        )
        with pytest.raises(data.SourceUnavailable, match="does not exist"):
            data.executions(SageMakerPipelines(client, "churn-pipeline"), 5)


def test_the_pipelines_follow_the_environment(tmp_path: Path) -> None:
    local = build_resources(state_config(tmp_path)).pipelines
    assert isinstance(local, LocalPipelines)
    assert local.where == str(tmp_path.resolve() / "executions")
    dev = state_config(tmp_path).model_copy(update={"env": "dev"})
    remote = build_pipelines(dev)
    assert isinstance(remote, SageMakerPipelines)
    assert remote.where == "SageMaker pipeline churn-pipeline"


# -- model versions -----------------------------------------------------------------


def test_model_versions_newest_first_with_metrics(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    register_versions(config, store)
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")

    versions = data.model_versions(registry, GROUP, store)

    assert versions["version"].tolist() == [2, 1]
    assert versions["approval_status"].tolist() == ["PendingManualApproval", "Approved"]
    assert versions["test_auc"].tolist() == [0.8123, 0.8011]
    assert versions["pr_auc"].tolist() == [0.52, 0.51]
    assert versions["pipeline_execution_id"].tolist() == [EXECUTION_ID] * 2


def test_model_versions_mark_the_one_the_endpoint_serves(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    register_versions(config, store)
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    first = registry.list_versions(GROUP)[0].arn

    serving = data.model_versions(registry, GROUP, store, serving_arn=first)
    assert serving["serving"].tolist() == [False, True]
    assert not data.model_versions(registry, GROUP, store)["serving"].any()


def test_serving_reads_the_endpoint_and_what_it_serves(tmp_path: Path) -> None:
    arn = "arn:aws:sagemaker:us-east-1:000000000000:model-package/churn-models/1"

    def endpoints(status: str | None) -> SimpleNamespace:
        info = SimpleNamespace(status=status) if status else None
        return SimpleNamespace(
            describe=lambda name: info, serving_package=lambda name: arn
        )

    assert data.serving(endpoints("InService"), "ep").now == arn
    stopped = data.serving(endpoints("Stopped"), "ep")
    assert (stopped.status, stopped.package_arn, stopped.now) == ("Stopped", arn, None)
    assert data.serving(endpoints(None), "ep") == data.Serving("ep")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    local = LocalEndpoints(tmp_path / "state", LocalObjectStore(tmp_path), registry)
    assert data.serving(local, "churn-endpoint") == data.Serving("churn-endpoint")

    def unreachable(name: str) -> None:
        raise OSError("connection refused")

    with pytest.raises(data.SourceUnavailable, match="cannot read endpoint ep"):
        data.serving(SimpleNamespace(describe=unreachable), "ep")


def test_model_versions_without_a_readable_report(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    register_versions(config, store)
    for path in (tmp_path / "s3").rglob("evaluation.json"):
        path.write_text("{}")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")

    versions = data.model_versions(registry, GROUP, store)

    assert versions["test_auc"].tolist() == [0.8123, 0.8011]  # from the metadata
    assert all(math.isnan(v) for v in versions["pr_auc"])
    assert data.model_versions(registry, "no-such-group", store).empty


# -- drift --------------------------------------------------------------------------


def test_drift_history_and_psi_over_time(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    uris = write_drift_results(config, store)
    # neither a deeper file nor a file beside the checks is a check
    prefix = data.drift_prefix(config)
    store.write_bytes(join_uri(prefix, "x", "old", "drift.json"), b"{}")
    store.write_bytes(join_uri(prefix, "drift.json"), b"{}")

    history = data.drift_history(store, prefix)

    assert [r.uri for r in history.results] == uris
    assert history.unreadable == []
    assert history.latest is not None and history.latest.violations == 1
    psi = data.psi_over_time(history)
    assert list(psi.columns) == data.PSI_COLUMNS
    assert psi.query("feature == 'tenure_days'")["psi"].tolist() == [0.02, 0.41]
    assert psi["checked_at"].iloc[0] == pd.Timestamp("2026-11-23T10:00:00Z")
    assert set(psi["source"]) == {"capture"}
    features = data.feature_drift(history.latest)
    assert features["feature"].tolist()[0] == "tenure_days"
    assert features["drifted"].tolist() == [True, False, False]


def test_drift_page_data_a_series_per_source_times_to_the_second_and_windows(
    tmp_path: Path,
) -> None:
    """What the Drift page draws and says: capture and PREDICTIONS checks seconds
    apart are separate series at their own instants, each with its window in words.
    """
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    write_drift_results(config, store)  # capture checks at 2026-11-2{3,4}T10:00:00Z
    prefix = data.drift_prefix(config)
    others = [
        ("2026-11-24T10:00:05Z", "predictions", {"as_of": "2026-06-30"}),
        ("2026-11-24T10:00:09Z", "file", {"file": "/data/batch.parquet"}),
        ("2026-11-24T10:00:12Z", "capture", {}),
    ]
    for checked_at, source, window in others:
        document = drift_document(checked_at, {"tenure_days": 0.3}, 0.2)
        document.update(source=source, window=window)
        folder = join_uri(prefix, checked_at.replace(":", "-"))
        store.write_bytes(join_uri(folder, "drift.json"), json.dumps(document).encode())

    history = data.drift_history(store, prefix)
    psi = data.psi_over_time(history)

    tenure = psi[psi["feature"] == "tenure_days"]
    assert [(t.isoformat(), source, value) for t, source, value in zip(
        tenure["checked_at"], tenure["source"], tenure["psi"], strict=True
    )] == [
        ("2026-11-23T10:00:00+00:00", "capture", 0.02),
        ("2026-11-24T10:00:00+00:00", "capture", 0.41),
        ("2026-11-24T10:00:05+00:00", "predictions", 0.3),
        ("2026-11-24T10:00:09+00:00", "file", 0.3),
        ("2026-11-24T10:00:12+00:00", "capture", 0.3),
    ]  # fmt: skip
    series = psi.groupby(["feature", "source"]).size()
    assert series[("tenure_days", "capture")] == 3
    assert series[("tenure_days", "predictions")] == 1
    assert [(r.source, r.window) for r in history.results] == [
        ("capture", "captured 2026-11-23 10:00 UTC to 2026-11-23 10:00 UTC"),
        ("capture", "captured 2026-11-23 10:00 UTC to 2026-11-24 10:00 UTC"),
        ("predictions", "scored as of 2026-06-30"),
        ("file", "file /data/batch.parquet"),
        ("capture", "no window recorded"),
    ]


def test_drift_history_lists_unreadable_results(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    write_drift_results(config, store)
    broken = join_uri(data.drift_prefix(config), "2026-11-25T00-00-00Z", "drift.json")
    store.write_bytes(broken, b'{"checked_at": "2026-11-25T00:00:00Z"}')

    history = data.drift_history(store, data.drift_prefix(config))

    assert len(history.results) == 2
    assert len(history.unreadable) == 1 and history.unreadable[0].startswith(broken)


def test_drift_history_empty(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "s3")
    history = data.drift_history(store, "s3://mlops-local/churn/monitoring/x")
    assert history.results == [] and history.latest is None
    assert data.psi_over_time(history).empty


def test_violations_from_model_monitor_file_or_drift_json(tmp_path: Path) -> None:
    config = state_config(tmp_path)
    store = LocalObjectStore(tmp_path / "s3")
    write_drift_results(config, store)
    latest = data.drift_history(store, data.drift_prefix(config)).latest
    assert latest is not None

    found = data.violations(store, latest)
    assert found.to_dict("records") == [
        {
            "feature_name": "tenure_days",
            "constraint_check_type": "baseline_drift_check",
            "description": "PSI 0.41 above 0.2",
        }
    ]
    store.path_of(latest.violations_uri).unlink()
    fallback = data.violations(store, latest)
    assert fallback["feature_name"].tolist() == ["tenure_days"]
    assert location(store, latest.report_uri).endswith("report.html")
    assert data.read_report(store, latest.report_uri) == b"<html>report</html>"
    assert data.read_report(store, latest.report_uri + ".missing") is None


# -- predictions --------------------------------------------------------------------


def test_predictions_dates_and_distribution(dashboard_state: DashboardState) -> None:
    table = data.predictions_table(dashboard_state.config)
    warehouse = dashboard_state.warehouse
    assert table == "MLOPS.CHURN.PREDICTIONS"

    assert data.prediction_dates(warehouse, table) == [LATEST_AS_OF, EARLIER_AS_OF]
    summary = data.prediction_summary(warehouse, table, LATEST_AS_OF, bins=10)

    assert summary.rows == 30
    counts = summary.by_model.set_index("model_package")["rows"].to_dict()
    assert counts == {"churn-models/1": 20, "churn-models/2": 10}
    histogram = summary.histogram
    assert len(histogram) == 2 * 10  # every bin of both packages, zeros included
    v2 = histogram[histogram["model_package"] == "churn-models/2"]
    assert v2["rows"].tolist() == [0] * 9 + [10]  # all at 0.97
    v1 = histogram[histogram["model_package"] == "churn-models/1"]
    assert v1["rows"].tolist() == [2] * 10
    earlier = data.prediction_summary(warehouse, table, EARLIER_AS_OF)
    assert earlier.rows == 5


def test_predictions_without_a_table(tmp_path: Path) -> None:
    warehouse = EmbeddedWarehouse(tmp_path / "snowflake", "MLOPS", "CHURN")
    assert data.prediction_dates(warehouse, "MLOPS.CHURN.PREDICTIONS") is None


def test_predictions_empty_table(tmp_path: Path) -> None:
    warehouse = EmbeddedWarehouse(tmp_path / "snowflake", "MLOPS", "CHURN")
    write_predictions(warehouse)
    with warehouse.connect() as conn:
        conn.cursor().execute("DELETE FROM PREDICTIONS")
    assert data.prediction_dates(warehouse, "MLOPS.CHURN.PREDICTIONS") == []


def test_predictions_refuse_bad_identifiers(tmp_path: Path) -> None:
    warehouse = EmbeddedWarehouse(tmp_path / "snowflake", "MLOPS", "CHURN")
    with pytest.raises(ConfigError, match="not a valid identifier"):
        data.prediction_dates(warehouse, "MLOPS.CHURN.P; DROP TABLE X")
    with pytest.raises(ConfigError, match="DATABASE.SCHEMA.TABLE"):
        data.prediction_summary(warehouse, "PREDICTIONS", LATEST_AS_OF)
    with pytest.raises(ValueError, match="bins"):
        data.prediction_summary(warehouse, "MLOPS.CHURN.PREDICTIONS", LATEST_AS_OF, 0)
    config = state_config(tmp_path)
    bad = config.model_copy(
        update={"snowflake": config.snowflake.model_copy(update={"database": "a-b"})}
    )
    with pytest.raises(ConfigError, match="snowflake.database"):
        data.predictions_table(bad)


def test_warehouse_errors_become_source_unavailable(tmp_path: Path) -> None:
    warehouse = EmbeddedWarehouse(tmp_path / "snowflake", "MLOPS", "CHURN")
    write_predictions(warehouse)
    with warehouse.connect() as conn:
        conn.cursor().execute("ALTER TABLE PREDICTIONS RENAME COLUMN SCORE TO S2")
    with pytest.raises(data.SourceUnavailable, match="MLOPS.CHURN.PREDICTIONS"):
        data.prediction_summary(warehouse, "MLOPS.CHURN.PREDICTIONS", LATEST_AS_OF)


def test_package_label() -> None:
    arn = "arn:aws:sagemaker:us-east-1:000000000000:model-package/churn-models/7"
    assert data.package_label(arn) == "churn-models/7"
    assert data.package_label(None) == "(none)"


def test_data_module_does_not_import_streamlit() -> None:
    probe = "import sys, dashboard.data; print('streamlit' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# -- the same functions against the AWS APIs (moto) ---------------------------------


def test_versions_and_drift_through_sagemaker_and_s3(
    tmp_path: Path, aws_credentials: None
) -> None:
    from moto import mock_aws

    from stack.objectstore import S3ObjectStore
    from stack.registry import SageMakerModelRegistry

    config = state_config(tmp_path)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=config.aws.bucket)
        store = S3ObjectStore(s3)
        registry = SageMakerModelRegistry(
            boto3.client("sagemaker", region_name="us-east-1")
        )
        register_versions(config, store, registry)
        uris = write_drift_results(config, store)

        versions = data.model_versions(registry, GROUP, store)
        history = data.drift_history(store, data.drift_prefix(config))
        latest = history.latest
        assert latest is not None
        found = data.violations(store, latest)

    assert versions["version"].tolist() == [2, 1]
    assert versions["approval_status"].tolist() == ["PendingManualApproval", "Approved"]
    assert versions["pr_auc"].tolist() == [0.52, 0.51]  # evaluation.json read from S3
    assert [r.uri for r in history.results] == uris
    assert found["feature_name"].tolist() == ["tenure_days"]
    assert location(store, latest.report_uri) == latest.report_uri


def test_predictions_through_the_connector(fakesnow_server: int) -> None:
    """The production path: snowflake-connector against a fakesnow server."""
    from tests.stack.test_warehouse import connector_config

    config = connector_config(fakesnow_server)
    warehouse = build_warehouse(config)
    table = data.predictions_table(config)
    assert data.prediction_dates(warehouse, table) is None
    write_predictions(warehouse)

    assert data.prediction_dates(warehouse, table) == [LATEST_AS_OF, EARLIER_AS_OF]
    summary = data.prediction_summary(warehouse, table, LATEST_AS_OF, bins=10)
    assert summary.rows == 30
    assert summary.histogram["rows"].sum() == 30


def test_unreachable_snowflake_is_source_unavailable(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.stack.test_warehouse import connector_config

    config = connector_config(free_port())
    with pytest.raises(data.SourceUnavailable, match="cannot read Snowflake table"):
        data.prediction_dates(build_warehouse(config), data.predictions_table(config))
