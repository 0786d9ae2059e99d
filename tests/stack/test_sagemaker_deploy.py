"""Safe deployment on SageMaker, against moto.

moto 5.2 has no UpdateEndpoint. Only that call is stubbed, at botocore's boundary: a
``before-call`` hook on the client answers it and records the request, and (unless the
test simulates a rollback) points moto's endpoint at the new config through moto's own
API. Every other call (models, configs, endpoints, the registry) goes to moto.
"""

import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from stack.config import DeploymentConfig
from stack.endpoints import EndpointError, SageMakerEndpoints
from stack.registry import SageMakerModelRegistry

ROLE = "arn:aws:iam::000000000000:role/test-sagemaker"


class UpdateEndpointStub:
    """Answers UpdateEndpoint; ``roll_back`` leaves the old config serving, as
    SageMaker does when a rollback alarm fires during the bake time.
    """

    def __init__(self, client):
        self.client = client
        self.requests = []
        self.roll_back = False
        client.meta.events.register("before-call.sagemaker.UpdateEndpoint", self)

    def __call__(self, params, **_):
        request = json.loads(params["body"])
        self.requests.append(request)
        name = request["EndpointName"]
        if not self.roll_back:
            self.client.delete_endpoint(EndpointName=name)
            self.client.create_endpoint(
                EndpointName=name, EndpointConfigName=request["EndpointConfigName"]
            )
        arn = f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{name}"
        return AWSResponse(None, 200, {}, None), {"EndpointArn": arn}


@pytest.fixture
def aws(aws_credentials):
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        yield client, UpdateEndpointStub(client)


def deployer(client, **settings):
    return SageMakerEndpoints(
        client,
        runtime=None,
        registry=SageMakerModelRegistry(client),
        deployment=DeploymentConfig(**settings),
        role_arn=ROLE,
        poll_seconds=0,
    )


def register(endpoints, status="Approved", version=1):
    return endpoints.registry.register(
        {
            "ModelPackageGroupName": "churn-models",
            "ModelApprovalStatus": status,
            "InferenceSpecification": {
                "Containers": [
                    {"Image": "img:1", "ModelDataUrl": f"s3://bkt/m{version}.tar.gz"}
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        }
    )


def test_first_deploy_creates_then_redeploy_is_a_no_op(aws):
    client, stub = aws
    endpoints = deployer(
        client, data_capture_s3_uri="s3://capture/churn", data_capture_percent=20
    )
    package = register(endpoints)
    report = endpoints.deploy_package(package.arn, "churn-endpoint")
    assert report.changed and report.variant_name == "AllTraffic"
    assert report.endpoint.status == "InService"
    config = client.describe_endpoint_config(
        EndpointConfigName=report.endpoint.config_name
    )
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://capture/churn"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20
    model = client.describe_model(ModelName=report.endpoint.model_name)
    assert model["PrimaryContainer"]["ModelPackageName"] == package.arn
    assert endpoints.serving_package("churn-endpoint") == package.arn
    assert endpoints.serving_package("no-such-endpoint") is None

    models_before = len(client.list_models()["Models"])
    again = endpoints.deploy_package(package.arn, "churn-endpoint")
    assert not again.changed and again.endpoint == report.endpoint
    assert len(client.list_models()["Models"]) == models_before
    assert stub.requests == []  # never updated


def test_a_new_package_is_rolled_out_blue_green_with_alarms(aws):
    client, stub = aws
    endpoints = deployer(
        client,
        strategy="canary",
        canary_percent=10,
        wait_interval_seconds=600,
        rollback_alarms=["churn-5xx", "churn-latency"],
    )
    first = endpoints.deploy_package(register(endpoints).arn, "churn-endpoint")
    second_package = register(endpoints, version=2)
    report = endpoints.deploy_package(second_package.arn, "churn-endpoint")
    assert report.changed and report.endpoint.config_name != first.endpoint.config_name
    (request,) = stub.requests
    assert request["EndpointConfigName"] == report.endpoint.config_name
    policy = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 600,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
    }
    assert request["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "churn-5xx"}, {"AlarmName": "churn-latency"}]
    }
    served = client.describe_model(ModelName=report.endpoint.model_name)
    assert served["PrimaryContainer"]["ModelPackageName"] == second_package.arn


def test_linear_and_all_at_once_policies():
    linear = SageMakerEndpoints(
        None, None, None, DeploymentConfig(strategy="linear", linear_step_percent=20)
    ).deployment_config()
    routing = linear["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "LINEAR" and routing["LinearStepSize"]["Value"] == 20
    plain = SageMakerEndpoints(None, None, None).deployment_config()
    assert plain["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == (
        "ALL_AT_ONCE"
    )
    assert "AutoRollbackConfiguration" not in plain


def test_a_rolled_back_update_is_reported_and_the_old_config_serves(aws):
    client, stub = aws
    endpoints = deployer(client, rollback_alarms=["churn-5xx"])
    first = endpoints.deploy_package(register(endpoints).arn, "churn-endpoint")
    stub.roll_back = True
    with pytest.raises(EndpointError, match="was rolled back"):
        endpoints.deploy_package(register(endpoints, version=2).arn, "churn-endpoint")
    assert (
        endpoints.describe("churn-endpoint").config_name == first.endpoint.config_name
    )


@pytest.mark.parametrize("status", ["PendingManualApproval", "Rejected"])
def test_only_approved_packages_are_deployed(aws, status):
    client, _ = aws
    endpoints = deployer(client)
    package = register(endpoints, status=status)
    with pytest.raises(EndpointError, match="only an Approved package"):
        endpoints.deploy_package(package.arn, "churn-endpoint")
    assert client.list_endpoints()["Endpoints"] == []


def test_a_missing_role_is_reported_before_any_call(aws):
    client, _ = aws
    endpoints = deployer(client)
    endpoints.role_arn = None
    with pytest.raises(EndpointError, match="aws.role_arn is not set"):
        endpoints.deploy_package(register(endpoints).arn, "churn-endpoint")
    assert client.list_models()["Models"] == []
