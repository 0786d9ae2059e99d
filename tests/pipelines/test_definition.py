import json

import boto3
import pytest

from pipelines.definition import LOCAL_ROLE, build_definition, make_session
from stack.config import load_config

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


def test_the_pipeline_shape():
    definition = build_definition(load_config("local", environ={}))
    top = [(s["Name"], s["Type"]) for s in definition["Steps"]]
    assert top == [
        ("Extract", "Processing"),
        ("Train", "Training"),
        ("Evaluate", "Processing"),
        ("CheckAuc", "Condition"),
    ]
    check = definition["Steps"][3]["Arguments"]
    assert [s["Name"] for s in check["IfSteps"]] == ["Register", "CheckApproval"]
    assert [s["Name"] for s in check["ElseSteps"]] == ["AucTooLow"]
    deploy = [s["Name"] for s in check["IfSteps"][1]["Arguments"]["IfSteps"]]
    assert deploy == ["CreateModel", "EndpointConfig", "Deploy"]
    assert {p["Name"] for p in definition["Parameters"]} == {
        "AsOfDate",
        "LabelWindowDays",
        "ProcessingInstanceCount",
        "AucThreshold",
        "ModelApprovalStatus",
        "DataVersion",
    }
    extract = definition["Steps"][0]["Arguments"]["AppSpecification"]
    assert extract["ContainerEntrypoint"] == ["python", "-m", "processing.extract"]


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
    train_env = local["Steps"][1]["Arguments"]["Environment"]
    assert train_env.pop("MLFLOW_ARTIFACT_LOCATION").startswith("file:///")
    assert substitute(local, mapping) == dev


@pytest.mark.parametrize("env", ["local", "dev"])
def test_no_secret_from_the_environment_reaches_the_definition(env):
    environ = {
        **DEV,
        "MLOPS_SNOWFLAKE__PASSWORD": "pw-sentinel-93f1",
        "MLOPS_SNOWFLAKE__SECRET_ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:sf",
    }
    text = json.dumps(build_definition(load_config(env, environ=environ)))
    assert "pw-sentinel-93f1" not in text
    assert "secretsmanager" not in text
