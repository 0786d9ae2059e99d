"""The definition checked against SageMaker's API model (botocore's service model)."""

import copy

import pytest

from pipelines.definition import build_definition
from pipelines.validation import (
    InvalidDefinition,
    check_definition,
    definition_problems,
)
from stack.config import load_config

from .test_definition import DEV

SECURE = {
    **DEV,
    "MLOPS_SECURITY__SUBNETS": "subnet-0a1b2c3d4e5f60718,subnet-0a1b2c3d4e5f60719",
    "MLOPS_SECURITY__SECURITY_GROUP_IDS": "sg-0a1b2c3d4e5f60718",
    "MLOPS_SECURITY__VOLUME_KMS_KEY_ID": "alias/mlops-volumes",
    "MLOPS_SECURITY__OUTPUT_KMS_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "MLOPS_SECURITY__ENCRYPT_INTER_CONTAINER_TRAFFIC": "true",
}


@pytest.fixture(scope="module")
def dev_definition():
    return build_definition(load_config("dev", environ=DEV))


def step(definition, name):
    def walk(steps):
        for s in steps:
            yield s
            if s["Type"] == "Condition":
                yield from walk(s["Arguments"]["IfSteps"])
                yield from walk(s["Arguments"]["ElseSteps"])

    return next(s for s in walk(definition["Steps"]) if s["Name"] == name)


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_every_environment_builds_a_valid_definition(env):
    # build_definition checks it; checking again shows the check ran clean
    definition = build_definition(load_config(env, environ=DEV))
    assert definition_problems(definition) == []


def test_network_and_encryption_settings_reach_every_job_and_still_validate():
    definition = build_definition(
        load_config(
            "prod",
            environ={
                **SECURE,
                "MLOPS_SECURITY__NETWORK_ISOLATION": "1",
                "MLOPS_MLFLOW__TRACKING_URI": "",
            },
        )
    )
    extract = step(definition, "Extract")["Arguments"]
    assert extract["NetworkConfig"]["VpcConfig"] == {
        "SecurityGroupIds": ["sg-0a1b2c3d4e5f60718"],
        "Subnets": ["subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719"],
    }
    assert extract["NetworkConfig"]["EnableNetworkIsolation"] is False  # Snowflake
    assert extract["NetworkConfig"]["EnableInterContainerTrafficEncryption"] is True
    assert extract["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == (
        "alias/mlops-volumes"
    )
    assert extract["ProcessingOutputConfig"]["KmsKeyId"] == (
        "1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    evaluate = step(definition, "Evaluate")["Arguments"]
    assert evaluate["NetworkConfig"]["EnableNetworkIsolation"] is True
    # the gate reads the registry: it keeps the network, inside the VPC
    gate = step(definition, "Gate")["Arguments"]
    assert gate["NetworkConfig"]["EnableNetworkIsolation"] is False
    assert gate["NetworkConfig"]["VpcConfig"] == extract["NetworkConfig"]["VpcConfig"]
    train = step(definition, "Train")["Arguments"]
    assert train["EnableNetworkIsolation"] is True
    assert (
        train["VpcConfig"]["Subnets"]
        == extract["NetworkConfig"]["VpcConfig"]["Subnets"]
    )
    assert train["ResourceConfig"]["VolumeKmsKeyId"] == "alias/mlops-volumes"
    assert (
        train["OutputDataConfig"]["KmsKeyId"] == "1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    assert step(definition, "EndpointConfig")["Arguments"]["KmsKeyId"] == (
        "alias/mlops-volumes"
    )
    assert definition_problems(definition) == []


def test_job_steps_cache_and_retry(dev_definition):
    for name in ("Extract", "Train", "Evaluate", "Gate"):
        s = step(dev_definition, name)
        if name == "Gate":  # the champion it compares with may have changed
            assert "CacheConfig" not in s
        else:
            assert s["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
        kinds = {e for p in s["RetryPolicies"] for e in p["ExceptionType"]}
        assert {"Step.THROTTLING", "SageMaker.CAPACITY_ERROR"} <= kinds


def test_caching_can_be_turned_off():
    definition = build_definition(
        load_config("dev", environ={**DEV, "MLOPS_SAGEMAKER__CACHE_EXPIRE_AFTER": ""})
    )
    assert "CacheConfig" not in step(definition, "Train")


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        (
            "Extract",
            lambda a: a.update(Bogus=1),
            'Unknown parameter in input: "Bogus"',
        ),
        (
            "Train",
            lambda a: a.pop("RoleArn"),
            'Missing required parameter in input: "RoleArn"',
        ),
        (
            "Train",
            lambda a: a["ResourceConfig"].update(InstanceCount="2"),
            "Invalid type for parameter ResourceConfig.InstanceCount",
        ),
        (
            "Train",
            lambda a: a["ResourceConfig"].update(InstanceType="m5.huge"),
            "ResourceConfig.InstanceType: 'm5.huge' is not one of",
        ),
        (
            "Extract",
            lambda a: a["ProcessingResources"]["ClusterConfig"].update(
                InstanceCount={"Get": "Parameters.AsOfDate"}
            ),
            "parameter AsOfDate is a String, but the API wants integer",
        ),
        (
            "Register",
            lambda a: a.update(ModelApprovalStatus="Maybe"),
            "ModelApprovalStatus: 'Maybe' is not one of",
        ),
        (
            "EndpointConfig",
            lambda a: a["ProductionVariants"][0].update(InitialInstanceCount=0),
            "InitialInstanceCount",
        ),
        (
            "Evaluate",
            lambda a: a["ProcessingInputs"][0]["S3Input"].update(
                S3Uri={"Get": "Parameters.Missing"}
            ),
            "undeclared parameter Missing",
        ),
    ],
)
def test_the_check_catches_a_bad_request(dev_definition, name, edit, expected):
    broken = copy.deepcopy(dev_definition)
    edit(step(broken, name)["Arguments"])
    with pytest.raises(InvalidDefinition) as raised:
        check_definition(broken)
    assert any(expected in p and name in p for p in raised.value.problems), (
        raised.value.problems
    )


def test_the_check_catches_bad_policies_and_conditions(dev_definition):
    broken = copy.deepcopy(dev_definition)
    step(broken, "Train")["CacheConfig"]["ExpireAfter"] = "30 days"
    step(broken, "Extract")["RetryPolicies"][0]["ExceptionType"] = ["Step.OOPS"]
    step(broken, "CheckAuc")["Arguments"]["Conditions"][0]["Type"] = "Roughly"
    problems = definition_problems(broken)
    assert any("ExpireAfter '30 days'" in p for p in problems)
    assert any("Step.OOPS" in p for p in problems)
    assert any("unknown condition type 'Roughly'" in p for p in problems)


def test_data_capture_and_the_variant_name_reach_the_endpoint_config():
    environ = {
        **DEV,
        "MLOPS_DEPLOYMENT__DATA_CAPTURE_S3_URI": "s3://mlops-dev-artifacts/capture",
        "MLOPS_DEPLOYMENT__DATA_CAPTURE_PERCENT": "20",
        "MLOPS_DEPLOYMENT__VARIANT_NAME": "Blue",
    }
    definition = build_definition(load_config("dev", environ=environ))
    arguments = step(definition, "EndpointConfig")["Arguments"]
    capture = arguments["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == "s3://mlops-dev-artifacts/capture"
    assert capture["InitialSamplingPercentage"] == 20
    assert arguments["ProductionVariants"][0]["VariantName"] == "Blue"
    assert definition_problems(definition) == []
