import boto3
import pytest
from moto import mock_aws

from stack.registry import LocalModelRegistry, RegistryError, SageMakerModelRegistry


def package_request(status="Approved", group="churn-models"):
    return {
        "ModelPackageGroupName": group,
        "InferenceSpecification": {
            "Containers": [{"Image": "img:1", "ModelDataUrl": "s3://bkt/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelApprovalStatus": status,
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": "s3://bkt/evaluation.json",
                }
            }
        },
    }


@pytest.fixture(params=["local", "sagemaker"])
def registry(request, tmp_path, aws_credentials):
    if request.param == "local":
        yield LocalModelRegistry(tmp_path / "registry", "us-east-1")
        return
    with mock_aws():
        yield SageMakerModelRegistry(boto3.client("sagemaker", region_name="us-east-1"))


def test_versions_approval_and_latest_approved(registry):
    first = registry.register(package_request("Approved"))
    second = registry.register(package_request("PendingManualApproval"))
    assert (first.version, second.version) == (1, 2)
    assert second.model_data_url == "s3://bkt/model.tar.gz"
    assert second.metrics_uri == "s3://bkt/evaluation.json"
    assert registry.latest_approved("churn-models").arn == first.arn
    updated = registry.set_approval(second.arn, "Approved", "looked good")
    assert updated.approval_status == "Approved"
    assert registry.latest_approved("churn-models").arn == second.arn
    registry.set_approval(second.arn, "Rejected", "bias found")
    assert registry.latest_approved("churn-models").arn == first.arn
    assert [p.version for p in registry.list_versions("churn-models")] == [1, 2]


def test_bad_requests_are_refused(registry):
    with pytest.raises(RegistryError, match="ModelApprovalStatus"):
        registry.register(package_request("Maybe"))
    bad = package_request()
    bad["InferenceSpecification"]["Containers"] = []
    with pytest.raises(RegistryError, match="Containers"):
        registry.register(bad)
    package = registry.register(package_request())
    with pytest.raises(RegistryError):
        registry.set_approval(package.arn, "Sure")


def test_unknown_package_is_reported(registry):
    with pytest.raises(RegistryError, match="no such model package"):
        registry.get("arn:aws:sagemaker:us-east-1:000000000000:model-package/none/9")
