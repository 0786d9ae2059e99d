import json

import boto3
import pytest

from pipelines.builder import make_session
from pipelines.definition import PROCESSING_SPECS, build_definition
from stack.config import ConfigError, job_environment, load_config
from stack.registry import LOCAL_ROLE

DEV = {
    "MLOPS_AWS__ROLE_ARN": "arn:aws:iam::000000000000:role/mlops-dev",
    "MLOPS_SAGEMAKER__IMAGE_URI": "000000000000.dkr.ecr.us-east-1.amazonaws.com/mlops:1",
    "MLOPS_MLFLOW__TRACKING_URI": "arn:aws:sagemaker:us-east-1:000000000000:mlflow-tracking-server/dev",
}


def built(config, calls):
    boto_session = boto3.Session(
        region_name=config.aws.region, aws_access_key_id="x", aws_secret_access_key="x"
    )
    boto_session.events.register(
        "before-send", lambda request, **_: calls.append(request.url)
    )
    return build_definition(config, make_session(config, boto_session))


def substitute(node, mapping):
    """Replace string leaves that equal a key of ``mapping``."""
    if isinstance(node, dict):
        return {k: substitute(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, mapping) for v in node]
    return mapping.get(node, node) if isinstance(node, str) else node


def test_building_makes_no_aws_call_and_is_deterministic():
    config = load_config("dev", environ=DEV)
    calls = []
    first = built(config, calls)
    second = built(config, calls)
    assert calls == []
    assert json.dumps(first) == json.dumps(second)


def top_step(definition, name):
    (step,) = [s for s in definition["Steps"] if s["Name"] == name]
    return step


def test_the_pipeline_shape():
    definition = build_definition(load_config("local", environ={}))
    top = [(s["Name"], s["Type"]) for s in definition["Steps"]]
    assert top == [
        ("Preflight", "Processing"),
        ("Extract", "Processing"),
        ("Train", "Training"),
        ("Baseline", "Processing"),
        ("Evaluate", "Processing"),
        ("Gate", "Processing"),
        ("CheckAuc", "Condition"),
    ]
    check = top_step(definition, "CheckAuc")["Arguments"]
    assert [s["Name"] for s in check["IfSteps"]] == [
        "Register",
        "Track",
        "CheckApproval",
    ]
    # Track puts the package's ARN on the MLflow run of this execution's Gate
    track = check["IfSteps"][1]
    assert "CacheConfig" not in track
    track_args = track["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert track_args[track_args.index("--model-package-arn") + 1] == {
        "Get": "Steps.Register.ModelPackageArn"
    }
    assert track_args[track_args.index("--run-id") + 1]["Std:JsonGet"]["Path"] == (
        "tracking.run_id"
    )
    assert [s["Name"] for s in check["ElseSteps"]] == ["AucTooLow"]
    deploy = check["IfSteps"][2]["Arguments"]["IfSteps"]
    assert [s["Name"] for s in deploy] == [
        "CreateModel",
        "EndpointConfig",
        "Deploy",
        "CheckWriteBack",
    ]
    # the write-back runs once the endpoint serves, when the parameter says so
    check_writeback = deploy[3]
    assert check_writeback["DependsOn"] == ["Deploy"]
    assert check_writeback["Arguments"]["Conditions"] == [
        {
            "LeftValue": {"Get": "Parameters.WriteBack"},
            "RightValue": True,
            "Type": "Equals",
        }
    ]
    (writeback,) = check_writeback["Arguments"]["IfSteps"]
    app = writeback["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"][2:] == [
        "snowflake.sagemaker_predictions",
        "writeback",
    ]
    arguments = app["ContainerArguments"]
    assert arguments[arguments.index("--model-package-arn") + 1] == {
        "Get": "Steps.Register.ModelPackageArn"
    }
    assert "CacheConfig" not in writeback  # new data every time: never cached
    # the training baseline is registered with the model as its drift baselines
    baseline = top_step(definition, "Baseline")
    assert baseline["Arguments"]["AppSpecification"]["ContainerEntrypoint"] == [
        "python",
        "-m",
        "monitoring.baseline",
    ]
    assert [i["InputName"] for i in baseline["Arguments"]["ProcessingInputs"]] == [
        "model",
        "train",
        "test",
    ]
    quality = check["IfSteps"][0]["Arguments"]["DriftCheckBaselines"][
        "ModelDataQuality"
    ]
    for name, document in (
        ("Statistics", "statistics.json"),
        ("Constraints", "constraints.json"),
    ):
        join = quality[name]["S3Uri"]["Std:Join"]
        output = "Steps.Baseline.ProcessingOutputConfig.Outputs['baseline']"
        assert join["Values"] == [{"Get": f"{output}.S3Output.S3Uri"}, document]
    assert {p["Name"] for p in definition["Parameters"]} == {
        "AsOfDate",
        "LabelWindowDays",
        "ProcessingInstanceCount",
        "AucThreshold",
        "ModelApprovalStatus",
        "DataVersion",
        "ChampionTolerance",
        "GitCommit",
        "MaxDepth",
        "LearningRate",
        "NumRound",
        "WriteBack",
        "TrainingInstanceCount",
    }
    extract = top_step(definition, "Extract")["Arguments"]["AppSpecification"]
    assert extract["ContainerEntrypoint"] == ["python", "-m", "processing.extract"]


def test_preflight_checks_every_parameter_and_its_fingerprint_keys_extract():
    definition = build_definition(load_config("dev", environ=DEV))
    preflight = top_step(definition, "Preflight")
    assert "CacheConfig" not in preflight  # it must look at the data every time
    arguments = preflight["Arguments"]["AppSpecification"]["ContainerArguments"]
    checked = [
        arguments[i + 1]["Std:Join"]["Values"]
        for i, item in enumerate(arguments)
        if item == "--param"
    ]
    assert checked == [
        [p["Name"], {"Get": f"Parameters.{p['Name']}"}]
        for p in definition["Parameters"]
    ]
    extract = top_step(definition, "Extract")
    assert extract["CacheConfig"]["Enabled"] is True
    extract_arguments = extract["Arguments"]["AppSpecification"]["ContainerArguments"]
    fingerprint = extract_arguments[extract_arguments.index("--data-fingerprint") + 1]
    assert fingerprint == {
        "Std:JsonGet": {
            "Path": "data.fingerprint",
            "PropertyFile": {"Get": "Steps.Preflight.PropertyFiles.PreflightReport"},
        }
    }
    # it reads Snowflake, so its request carries the connection settings
    assert preflight["Arguments"]["Environment"]["MLOPS_SNOWFLAKE__MODE"] == "connector"


def test_local_and_dev_definitions_differ_only_in_configured_values():
    local_config = load_config("local", environ={})
    dev_config = load_config("dev", environ=DEV)
    local = build_definition(local_config)
    dev = build_definition(dev_config)
    mapping = {
        local_config.artifact_root: dev_config.artifact_root,
        local_config.sagemaker.image_uri: dev_config.sagemaker.image_uri,
        LOCAL_ROLE: dev_config.aws.role_arn,
        "local": "dev",
        local_config.mlflow_tracking_uri: dev_config.mlflow.tracking_uri,
        "churn-pipeline": "churn-pipeline-dev",
        "churn-endpoint": "churn-endpoint-dev",
        "churn-models": "churn-models-dev",
    }
    # the one local-only setting: where the local MLflow store keeps artifacts
    train_env = top_step(local, "Train")["Arguments"]["Environment"]
    assert train_env.pop("MLFLOW_ARTIFACT_LOCATION").startswith("file:///")
    # and the WriteBack parameter's default (writeback.in_pipeline): on for the local
    # whole loop, off unless asked for on SageMaker
    defaults = {
        name: [p for p in d["Parameters"] if p["Name"] == "WriteBack"][0]
        for name, d in (("local", local), ("dev", dev))
    }
    assert defaults["local"].pop("DefaultValue") is True
    assert defaults["dev"].pop("DefaultValue") is False
    # and the local endpoint's data capture into the local store (conf/local.yaml)
    (approval,) = [
        s["Arguments"]
        for s in top_step(local, "CheckAuc")["Arguments"]["IfSteps"]
        if s["Name"] == "CheckApproval"
    ]
    (endpoint_config,) = [
        s for s in approval["IfSteps"] if s["Name"] == "EndpointConfig"
    ]
    capture = endpoint_config["Arguments"].pop("DataCaptureConfig")
    assert capture["DestinationS3Uri"] == "s3://mlops-local/churn/datacapture"
    # and the configuration each job reads, which its environment carries
    for definition, config in ((local, local_config), (dev, dev_config)):
        for step, environment in job_environments(definition).items():
            carried = {k: v for k, v in environment.items() if k.startswith("MLOPS_")}
            sections = (
                PROCESSING_SPECS[step].sections if step in PROCESSING_SPECS else ()
            )
            assert carried == job_environment(config, sections)
            for key in carried:
                del environment[key]
    assert substitute(local, mapping) == dev


def job_environments(definition):
    """Each processing job's Environment, by step name (condition branches too)."""
    found = {}

    def visit(steps):
        for step in steps:
            if step["Type"] == "Processing":
                found[step["Name"]] = step["Arguments"].setdefault("Environment", {})
            if step["Type"] == "Condition":
                visit(step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"])

    visit(definition["Steps"])
    return found


@pytest.mark.parametrize("env", ["local", "dev"])
def test_no_secret_from_the_environment_reaches_the_definition(env):
    environ = {
        **DEV,
        "MLOPS_SNOWFLAKE__PASSWORD": "pw-sentinel-93f1",
        "MLOPS_SNOWFLAKE__SECRET_ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:sf",
    }
    definition = build_definition(load_config(env, environ=environ))
    assert "pw-sentinel-93f1" not in json.dumps(definition)
    # the job gets the secret's reference, and resolves it when it connects
    extract = {s["Name"]: s for s in definition["Steps"]}["Extract"]["Arguments"]
    assert (
        extract["Environment"]["MLOPS_SNOWFLAKE__SECRET_ARN"]
        == (environ["MLOPS_SNOWFLAKE__SECRET_ARN"])
    )


def test_a_password_without_a_reference_is_refused_for_a_snowflake_job():
    environ = {**DEV, "MLOPS_SNOWFLAKE__PASSWORD": "pw-sentinel-93f1"}
    with pytest.raises(ConfigError, match="never gets a secret from its definition"):
        build_definition(load_config("dev", environ=environ))


def test_the_gate_is_a_step_of_its_own_read_and_named_when_it_fails():
    definition = build_definition(load_config("local", environ={}))
    steps = {s["Name"]: s for s in definition["Steps"]}
    train_env = steps["Train"]["Arguments"]["Environment"]
    # the commit is a parameter reference, never a per-build or per-execution value
    assert train_env["GIT_COMMIT"] == {"Get": "Parameters.GitCommit"}
    # Evaluate depends on the model and the test split only: cached; the gate depends
    # on the current champion too: never cached
    assert "CacheConfig" in steps["Evaluate"] and "CacheConfig" not in steps["Gate"]
    gate = steps["Gate"]["Arguments"]
    arguments = gate["AppSpecification"]["ContainerArguments"]
    assert gate["AppSpecification"]["ContainerEntrypoint"][-1] == "processing.gate"
    assert arguments[arguments.index("--model-package-group") + 1] == "churn-models"
    evaluate_args = steps["Evaluate"]["Arguments"]["AppSpecification"]
    assert "--model-package-group" not in evaluate_args.get("ContainerArguments", [])
    check = steps["CheckAuc"]["Arguments"]
    paths = [c["LeftValue"]["Std:JsonGet"]["Path"] for c in check["Conditions"]]
    assert paths == ["binary_classification_metrics.auc.value", "gate.decision"]
    sources = {
        c["LeftValue"]["Std:JsonGet"]["PropertyFile"]["Get"]
        for c in check["Conditions"]
    }
    assert sources == {"Steps.Gate.PropertyFiles.GateReport"}
    fail = check["ElseSteps"][0]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert fail[1]["Std:JsonGet"]["Path"] == "gate.rule"
    register = check["IfSteps"][0]["Arguments"]
    metadata = register["CustomerMetadataProperties"]
    assert {"git_commit", "mlflow_run_id", "report_uri", "data_version"} <= set(
        metadata
    )
    # the version names its execution's MLflow run (the Gate's) and the training run
    assert metadata["mlflow_run_id"]["Std:JsonGet"]["Path"] == "tracking.run_id"
    assert metadata["mlflow_training_run_id"]["Std:JsonGet"]["Path"] == (
        "tracking.training_run_id"
    )
    assert arguments[arguments.index("--execution-id") + 1] == {
        "Get": "Execution.PipelineExecutionId"
    }


def test_spot_training_is_a_configuration_switch():
    plain = build_definition(load_config("dev", environ=DEV))
    spot = build_definition(
        load_config("dev", {"sagemaker.spot_training": True}, environ=DEV)
    )
    train = {d["Name"]: d for d in spot["Steps"]}["Train"]["Arguments"]
    assert train["EnableManagedSpotTraining"] is True
    assert (
        train["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= (train["StoppingCondition"]["MaxRuntimeInSeconds"])
    )
    checkpoint = train["CheckpointConfig"]
    assert checkpoint["LocalPath"] == "/opt/ml/checkpoints"
    assert checkpoint["S3Uri"].endswith("/checkpoints/train")
    assert "Execution" not in json.dumps(checkpoint)  # no per-execution value: caching
    off = {d["Name"]: d for d in plain["Steps"]}["Train"]["Arguments"]
    assert "CheckpointConfig" not in off and not off.get("EnableManagedSpotTraining")


def test_the_main_hyperparameters_are_pipeline_parameters_defaulting_to_config():
    config = load_config(
        "local", environ={"MLOPS_TRAINING__HYPERPARAMETERS__MAX_DEPTH": "7"}
    )
    definition = build_definition(config)
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert (defaults["MaxDepth"], defaults["LearningRate"], defaults["NumRound"]) == (
        7,
        0.1,
        300,
    )
    train = {s["Name"]: s for s in definition["Steps"]}["Train"]["Arguments"]
    max_depth = train["HyperParameters"]["max_depth"]["Std:Join"]["Values"]
    assert max_depth == [{"Get": "Parameters.MaxDepth"}]
    assert train["HyperParameters"]["subsample"] == "0.9"  # config only


def test_an_override_on_the_upserting_machine_reaches_its_job_in_the_definition():
    overrides = {
        "MLOPS_SNOWFLAKE__WAREHOUSE": "BIG_WH",
        "MLOPS_EXTRACT__SLICE_ROWS": "5000",
        "MLOPS_FEATURES__DIRECTORY": "/opt/team/features",
        "MLOPS_WRITEBACK__BATCH_ROWS": "500",
        "MLOPS_AWS__PREFIX": "team-churn",
        # the platform's, never a definition's
        "MLOPS_STATE_DIR": "/elsewhere",
        "MLOPS_AWS__ENDPOINT_URL": "http://127.0.0.1:5000",
    }
    definition = build_definition(load_config("dev", environ={**DEV, **overrides}))
    environments = job_environments(definition)
    assert environments["Extract"]["MLOPS_SNOWFLAKE__WAREHOUSE"] == "BIG_WH"
    assert environments["Extract"]["MLOPS_EXTRACT__SLICE_ROWS"] == "5000"
    assert environments["Extract"]["MLOPS_FEATURES__DIRECTORY"] == "/opt/team/features"
    assert environments["WriteBack"]["MLOPS_WRITEBACK__BATCH_ROWS"] == "500"
    assert environments["Gate"]["MLOPS_AWS__PREFIX"] == "team-churn"
    text = json.dumps(definition)
    assert "/elsewhere" not in text and "127.0.0.1:5000" not in text
