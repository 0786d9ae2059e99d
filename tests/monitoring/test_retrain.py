"""The retraining decision, the command on the embedded stack and against moto's
SageMaker, and the trigger starting a real local execution.
"""

import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from monitoring import retrain
from monitoring.decision import (
    DriftReport,
    InputError,
    ServingModel,
    decide,
    model_of,
    new_as_of,
    newest_drift,
    serving_model,
)
from monitoring.retraining import request_token
from stack.config import MonitoringConfig, load_config
from stack.objectstore import LocalObjectStore
from stack.registry import LocalModelRegistry, ModelPackage
from tests.conftest import SMALL_CUSTOMERS, free_port

REGISTERED = datetime(2026, 7, 2, 8, 0, tzinfo=UTC)
TODAY = date(2026, 7, 3)
MODEL = ServingModel(
    arn="arn:aws:sagemaker:us-east-1:000000000000:model-package/churn-models/1",
    version=1,
    registered_at=REGISTERED,
    as_of=date(2026, 3, 31),
    label_window_days=90,
    found_by="registry",
)
# labels through 2026-06-30 with a 90-day window: the newest as-of date is 2026-04-01
SETTINGS = MonitoringConfig(labels_through=date(2026, 6, 30), retrain_every_days=30)


def drift(hours_after_registration: float, violations: int) -> DriftReport:
    checked_at = REGISTERED + timedelta(hours=hours_after_registration)
    return DriftReport("s3://bkt/monitoring/e/t/drift.json", checked_at, violations)


# --- the decision ---------------------------------------------------------------------


def test_the_new_as_of_date_is_the_newest_with_complete_labels():
    assert new_as_of(date(2026, 6, 30), 90) == date(2026, 4, 1)
    assert new_as_of(date(2026, 3, 1), 1) == date(2026, 2, 28)


def test_a_violation_found_after_the_model_was_registered_retrains():
    decision = decide(MODEL, drift(2, violations=3), SETTINGS, 90, TODAY)
    assert decision.retrain
    assert decision.triggers == ("violation",)
    assert decision.as_of == date(2026, 4, 1)
    assert decision.parameters == {"AsOfDate": "2026-04-01", "LabelWindowDays": "90"}
    assert "found 3 violation(s) after version 1 was registered" in decision.reason


def test_a_violation_older_than_the_model_does_not():
    decision = decide(MODEL, drift(-2, violations=3), SETTINGS, 90, TODAY)
    assert not decision.retrain
    assert decision.parameters == {}
    assert "before version 1 was registered" in decision.reason


def test_a_clean_check_does_not_and_violations_are_ignored_when_turned_off():
    assert not decide(MODEL, drift(2, 0), SETTINGS, 90, TODAY).retrain
    assert not decide(MODEL, None, SETTINGS, 90, TODAY).retrain
    off = SETTINGS.model_copy(update={"retrain_on_violation": False})
    decision = decide(MODEL, drift(2, 3), off, 90, TODAY)
    assert not decision.retrain
    assert "retrain_on_violation is off" in decision.reason


def test_the_schedule_retrains_once_the_window_has_moved_far_enough():
    later = SETTINGS.model_copy(update={"labels_through": date(2026, 7, 30)})
    decision = decide(MODEL, None, later, 90, TODAY)  # as-of 2026-05-01: 31 days on
    assert decision.retrain and decision.triggers == ("schedule",)
    assert decision.parameters["AsOfDate"] == "2026-05-01"
    early = SETTINGS.model_copy(update={"labels_through": date(2026, 7, 28)})
    decision = decide(MODEL, None, early, 90, TODAY)  # 29 days: not yet
    assert not decision.retrain
    assert "moved 29 of 30 days" in decision.reason
    never = later.model_copy(update={"retrain_every_days": None})
    assert not decide(MODEL, None, never, 90, TODAY).retrain


def test_without_labels_through_the_window_ends_today():
    today_settings = SETTINGS.model_copy(update={"labels_through": None})
    decision = decide(MODEL, drift(2, 1), today_settings, 90, date(2026, 7, 10))
    assert decision.as_of == date(2026, 4, 11)


def test_nothing_to_do_when_the_window_has_not_moved_unless_forced():
    same_window = MODEL.__class__(**{**MODEL.__dict__, "as_of": date(2026, 4, 1)})
    decision = decide(same_window, drift(2, 5), SETTINGS, 90, TODAY)
    assert not decision.retrain
    assert decision.triggers == ("violation",)
    assert "not after version 1's as-of date 2026-04-01" in decision.reason
    forced = decide(same_window, drift(2, 5), SETTINGS, 90, TODAY, force=True)
    assert forced.retrain and forced.triggers == ("force", "violation")
    assert forced.parameters["AsOfDate"] == "2026-04-01"


def test_no_model_means_nothing_to_retrain_unless_forced():
    decision = decide(None, drift(2, 5), SETTINGS, 90, TODAY)
    assert not decision.retrain and "no model serves" in decision.reason
    assert decide(None, None, SETTINGS, 90, TODAY, force=True).retrain


def test_the_request_token_repeats_within_a_day_only():
    params = {"AsOfDate": "2026-04-01", "LabelWindowDays": "90"}
    token = request_token("churn-pipeline-dev", params, TODAY)
    assert token == request_token("churn-pipeline-dev", dict(params), TODAY)
    assert 32 <= len(token) <= 128  # StartPipelineExecution's limits
    assert token != request_token("churn-pipeline-dev", params, date(2026, 7, 4))
    assert token != request_token(
        "churn-pipeline-dev", {**params, "AsOfDate": "2026-04-02"}, TODAY
    )


# --- what the decision reads ----------------------------------------------------------


def package(version=1, status="Approved", **metadata):
    return ModelPackage(
        arn=f"arn:aws:sagemaker:us-east-1:000000000000:model-package/g/{version}",
        group="g",
        version=version,
        approval_status=status,
        image_uri="img",
        model_data_url="s3://bkt/m.tar.gz",
        created_at="2026-07-02T08:00:00+00:00",
        customer_metadata=metadata,
    )


def test_the_model_s_window_comes_from_its_customer_metadata():
    model = model_of(package(as_of_date="2026-03-31", label_window_days="90"), "x")
    assert model.as_of == date(2026, 3, 31) and model.label_window_days == 90
    assert model.registered_at == REGISTERED
    with pytest.raises(InputError, match="has no as_of_date in its customer metadata"):
        model_of(package(), "registry")


def test_the_served_package_wins_over_the_newest_approved_one():
    served, newest = (
        package(1, as_of_date="2026-03-31"),
        package(2, as_of_date="2026-04-01"),
    )
    registry = {p.arn: p for p in (served, newest)}

    def resources(arn):
        return SimpleNamespace(
            config=load_config("local", environ={}),
            endpoints=SimpleNamespace(serving_package=lambda name: arn),
            registry=SimpleNamespace(
                get=registry.__getitem__, latest_approved=lambda g: newest
            ),
        )

    model = serving_model(resources(served.arn))
    assert (model.version, model.found_by) == (1, "endpoint")
    model = serving_model(resources(None))
    assert (model.version, model.found_by) == (2, "registry")


def test_the_newest_check_is_read_and_nested_or_other_files_are_not(tmp_path):
    store = LocalObjectStore(tmp_path)
    prefix = "s3://bkt/churn/monitoring/ep"
    for stamp, violations in (("2026-07-01T05-00-00Z", 4), ("2026-07-02T05-00-00Z", 0)):
        report = {"checked_at": stamp[:10] + "T05:00:00Z", "violations": violations}
        store.write_bytes(f"{prefix}/{stamp}/drift.json", json.dumps(report).encode())
    store.write_bytes(f"{prefix}/2026-07-02T05-00-00Z/report.html", b"<html>")
    store.write_bytes(f"{prefix}/zzz/nested/drift.json", b"not read")
    newest = newest_drift(store, prefix)
    assert newest.violations == 0
    assert newest.checked_at == datetime(2026, 7, 2, 5, tzinfo=UTC)
    assert newest_drift(store, "s3://bkt/churn/monitoring/other") is None


# --- the command on the embedded stack ------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("MLOPS_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def state(tmp_path, clean_env):
    return tmp_path / "state"


def register_model(state, as_of="2026-03-31", **extra) -> ModelPackage:
    """A version in the local registry as the pipeline's Register step records it."""
    metadata = {"as_of_date": as_of, "label_window_days": "90", **extra}
    if as_of is None:
        metadata.pop("as_of_date")
    return LocalModelRegistry(state / "registry", "us-east-1").register(
        {
            "ModelPackageGroupName": "churn-models",
            "ModelApprovalStatus": "Approved",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "local/snowflake-sagemaker-mlops:latest",
                        "ModelDataUrl": "s3://mlops-local/churn/none/model.tar.gz",
                    }
                ]
            },
            "CustomerMetadataProperties": metadata,
        }
    )


def write_drift(state, checked_at: datetime, violations: int, raw: bytes | None = None):
    stamp = checked_at.strftime("%Y-%m-%dT%H-%M-%SZ")
    uri = f"s3://mlops-local/churn/monitoring/churn-endpoint/{stamp}/drift.json"
    report = {
        "checked_at": checked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endpoint": "churn-endpoint",
        "source": "capture",
        "rows": 5000,
        "features": [],
        "prediction": None,
        "performance": None,
        "violations": violations,
    }
    LocalObjectStore(state / "s3").write_bytes(uri, raw or json.dumps(report).encode())
    return uri


def after(model: ModelPackage, hours: float) -> datetime:
    return datetime.fromisoformat(model.created_at) + timedelta(hours=hours)


def cli(capsys, *args, today=TODAY):
    code = retrain.main(list(args), today=today)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_decides_and_says_why_without_starting(state, capsys):
    model = register_model(state)
    write_drift(state, after(model, 1), violations=2)
    code, out, err = cli(capsys, "--state-dir", str(state))
    assert code == 0, err
    assert "Serving model: version 1" in out and "as-of date 2026-03-31" in out
    assert "2 violation(s)" in out
    assert "Retrain: the drift check at" in out and "AsOfDate 2026-04-01" in out
    assert "Not started (pass --start" in out
    assert not (state / "executions").exists()


def test_the_command_prints_json_lines_for_cd_logs(state, capsys):
    model = register_model(state)
    write_drift(state, after(model, -1), violations=2)
    code, out, _ = cli(capsys, "--state-dir", str(state), "--log-format", "json")
    events = {e["event"]: e for e in map(json.loads, out.splitlines())}
    assert code == 0
    assert events["decision"]["retrain"] is False
    assert events["decision"]["as_of"] == "2026-04-01"
    assert events["drift"]["violations"] == 2


def test_a_given_report_is_used_instead_of_the_newest(state, tmp_path, capsys):
    model = register_model(state)
    write_drift(state, after(model, 2), violations=0)
    given = tmp_path / "drift.json"
    checked = after(model, 1).strftime("%Y-%m-%dT%H:%M:%SZ")
    given.write_text(json.dumps({"checked_at": checked, "violations": 7}))
    code, out, _ = cli(capsys, "--state-dir", str(state), "--drift-report", str(given))
    assert code == 0 and "found 7 violation(s) after version 1" in out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda s: write_drift(s, datetime.now(UTC), 1, raw=b"{oops"), "is not JSON"),
        (
            lambda s: write_drift(s, datetime.now(UTC), 1, raw=b'{"violations": "1"}'),
            "'violations' must be a whole number",
        ),
        (
            lambda s: write_drift(
                s, datetime.now(UTC), 1, raw=b'{"violations": 1, "checked_at": "x"}'
            ),
            "checked_at: 'x' is not an ISO 8601 time",
        ),
        (lambda s: register_model(s, as_of=None), "has no as_of_date"),
    ],
)
def test_bad_input_exits_2_naming_it_and_starts_nothing(state, capsys, setup, message):
    register_model(state)
    setup(state)  # (for the last case, the newest Approved version lacks it)
    code, out, err = cli(capsys, "--state-dir", str(state), "--start")
    assert code == 2, out + err
    assert message in err and "Traceback" not in err
    assert not (state / "executions").exists()


def test_bad_config_and_a_missing_report_exit_2(state, capsys, monkeypatch):
    code, _, err = cli(
        capsys, "--state-dir", str(state), "--drift-report", "/nope.json"
    )
    assert code == 2 and "--drift-report /nope.json" in err
    monkeypatch.setenv("MLOPS_MONITORING__RETRAIN_EVERY_DAYS", "0")
    code, _, err = cli(capsys, "--state-dir", str(state))
    assert code == 2
    assert "monitoring.retrain_every_days" in err
    assert "MLOPS_MONITORING__RETRAIN_EVERY_DAYS" in err
    code, _, err = cli(capsys, "--env", "nowhere")
    assert code == 2 and "unknown environment 'nowhere'" in err


# --- on AWS (moto) --------------------------------------------------------------------


@pytest.fixture
def sagemaker(aws_credentials, clean_env, monkeypatch):
    """moto's SageMaker and S3; every StartPipelineExecution request is kept."""
    import boto3
    from moto import mock_aws

    from stack import resources

    # what the CD runner sets for dev (build_resources describes Snowflake too)
    monkeypatch.setenv("MLOPS_SNOWFLAKE__ACCOUNT", "acme-dev")
    requests = []
    with mock_aws():
        build = resources.build_resources

        def resources_with_log(config):
            built = build(config)
            built.pipelines.client.meta.events.register(
                "before-parameter-build.sagemaker.StartPipelineExecution",
                lambda params, **_: requests.append(dict(params)),
            )
            return built

        monkeypatch.setattr(resources, "build_resources", resources_with_log)
        client = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="mlops-dev-artifacts")
        yield SimpleNamespace(client=client, s3=s3, requests=requests)


def aws_model(sagemaker, as_of="2026-03-31"):
    client = sagemaker.client
    client.create_model_package_group(ModelPackageGroupName="churn-models-dev")
    arn = client.create_model_package(
        ModelPackageGroupName="churn-models-dev",
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [
                {"Image": "img:1", "ModelDataUrl": "s3://mlops-dev-artifacts/m.tar.gz"}
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        CustomerMetadataProperties={"as_of_date": as_of, "label_window_days": "90"},
    )["ModelPackageArn"]
    return client.describe_model_package(ModelPackageName=arn)


def aws_drift(sagemaker, checked_at: datetime, violations: int):
    stamp = checked_at.strftime("%Y-%m-%dT%H-%M-%SZ")
    report = {"checked_at": checked_at.isoformat(), "violations": violations}
    sagemaker.s3.put_object(
        Bucket="mlops-dev-artifacts",
        Key=f"churn/monitoring/churn-endpoint-dev/{stamp}/drift.json",
        Body=json.dumps(report).encode(),
    )


def create_training_pipeline(sagemaker):
    parameters = [
        {"Name": "AsOfDate", "Type": "String", "DefaultValue": "2026-03-31"},
        {"Name": "LabelWindowDays", "Type": "Integer", "DefaultValue": 90},
    ]
    sagemaker.client.create_pipeline(
        PipelineName="churn-pipeline-dev",
        PipelineDefinition=json.dumps(
            {"Version": "2020-12-01", "Parameters": parameters, "Steps": []}
        ),
        RoleArn="arn:aws:iam::000000000000:role/mlops-dev",
    )


def test_on_aws_a_violation_starts_the_pipeline_once_a_day(sagemaker, capsys):
    described = aws_model(sagemaker)
    aws_drift(sagemaker, described["CreationTime"] + timedelta(hours=1), violations=4)
    create_training_pipeline(sagemaker)

    code, out, err = cli(capsys, "--env", "dev", "--start")
    assert code == 0, out + err
    assert "Started execution arn:aws:sagemaker:" in out
    # dev sets no labels_through: labels are complete through today, 2026-07-03
    assert "AsOfDate=2026-04-04" in out
    executions = sagemaker.client.list_pipeline_executions(
        PipelineName="churn-pipeline-dev"
    )["PipelineExecutionSummaries"]
    assert len(executions) == 1
    arn = executions[0]["PipelineExecutionArn"]
    started = sagemaker.client.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=arn
    )["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in started} == {
        "AsOfDate": "2026-04-04",
        "LabelWindowDays": "90",
    }
    assert executions[0]["PipelineExecutionDisplayName"] == "retrain-2026-04-04"

    # the same decision later that day sends the same token (SageMaker then answers
    # with the execution it started); the next day's differs
    assert cli(capsys, "--env", "dev", "--start")[0] == 0
    assert cli(capsys, "--env", "dev", "--start", today=TODAY + timedelta(1))[0] == 0
    tokens = [r["ClientRequestToken"] for r in sagemaker.requests]
    assert len(tokens) == 3
    assert tokens[0] == tokens[1] != tokens[2]


def test_on_aws_nothing_is_started_without_a_trigger(sagemaker, capsys):
    described = aws_model(sagemaker)
    aws_drift(sagemaker, described["CreationTime"] + timedelta(hours=1), violations=0)
    create_training_pipeline(sagemaker)
    code, out, _ = cli(capsys, "--env", "dev", "--start")
    assert code == 0 and "No retraining: nothing to do" in out
    assert sagemaker.requests == []


def test_on_aws_a_missing_pipeline_is_a_setup_error(sagemaker, capsys):
    described = aws_model(sagemaker)
    aws_drift(sagemaker, described["CreationTime"] + timedelta(hours=1), violations=1)
    code, _, err = cli(capsys, "--env", "dev", "--start")
    assert code == 2
    assert "StartPipelineExecution on churn-pipeline-dev" in err
    assert "python -m pipelines.run --env dev --upsert" in err


# --- the trigger starting a local execution (must show) -------------------------------


@pytest.mark.e2e
def test_a_violation_starts_a_local_execution_with_the_window_moved(
    state, seeded_snowflake_dir, capsys, monkeypatch
):
    """A drift check with violations after the serving model was registered: `retrain
    --start` runs the real local pipeline, and its execution record carries the new
    AsOfDate (labels through 2026-06-30, 90-day window: 2026-04-01).
    """
    from pipelines.local_runner import Execution

    # Register the new version without deploying it (no endpoint to start and stop):
    # the pipeline's ModelApprovalStatus default, as a team that reviews models has it.
    monkeypatch.setenv(
        "MLOPS_SAGEMAKER__MODEL_APPROVAL_STATUS", "PendingManualApproval"
    )
    # the trigger is under test, not the model's quality on 3,000 customers
    monkeypatch.setenv("MLOPS_EVALUATION__AUC_THRESHOLD", "0.5")
    monkeypatch.setenv("MLOPS_TRAINING__HYPERPARAMETERS__NUM_ROUND", "30")
    shutil.copytree(seeded_snowflake_dir, state / "snowflake")  # the small demo data
    model = register_model(state)  # the version trained on 2026-03-31 now serving
    write_drift(state, after(model, 1), violations=3)

    code, out, err = cli(
        capsys,
        "--state-dir",
        str(state),
        "--customers",
        str(SMALL_CUSTOMERS),
        "--port",
        str(free_port()),
        "--no-writeback",
        "--start",
        today=datetime.now(UTC).date(),
    )
    assert code == 0, out + err
    assert "Retrain: the drift check at" in out
    assert "Starting the local pipeline with AsOfDate=2026-04-01" in out
    assert out.strip().endswith("Succeeded")

    (directory,) = (state / "executions").iterdir()
    execution = Execution.load(directory)
    assert execution.status == "Succeeded"
    assert execution.parameters["AsOfDate"] == "2026-04-01"
    assert execution.parameters["WriteBack"] is False
    statuses = {s.name: s.status for s in execution.steps}
    assert (
        statuses["Extract"]
        == statuses["Train"]
        == statuses["Register"]
        == ("Succeeded")
    )
    assert statuses["Deploy"] == "NotExecuted"  # PendingManualApproval
    # the Extract read the moved window, and the new version records it
    extract = execution.properties["Extract"]["AppSpecification"]["ContainerArguments"]
    assert extract[extract.index("--as-of") + 1] == "2026-04-01"
    new = LocalModelRegistry(state / "registry", "us-east-1").list_versions(
        "churn-models"
    )[-1]
    assert (new.version, new.approval_status) == (2, "PendingManualApproval")
    assert new.customer_metadata["as_of_date"] == "2026-04-01"
    assert new.customer_metadata["pipeline_execution_id"] == execution.execution_id


@pytest.mark.e2e
def test_a_start_whose_feature_set_is_not_there_exits_2_before_any_work(
    state, seeded_snowflake_dir, tmp_path, capsys, monkeypatch
):
    # the configuration names a feature folder that does not exist: refused before
    # an execution starts (a failing execution's exit 1 is the whole loop's test)
    monkeypatch.setenv("MLOPS_FEATURES__DIRECTORY", str(tmp_path / "no-features"))
    shutil.copytree(seeded_snowflake_dir, state / "snowflake")
    model = register_model(state)
    write_drift(state, after(model, 1), violations=1)
    code, out, err = cli(capsys, "--state-dir", str(state), "--no-writeback", "--start")
    assert code == 2, out + err
    assert "no feature set named 'churn' under" in out + err
    assert not (state / "executions").exists() or not any(
        (state / "executions").glob("*/execution.json")
    )
