"""The approval flow on both registries: approve/reject with a reason, and a package
that is not Approved (above all a Rejected one) is never deployed.
"""

from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from pipelines import approve
from stack.config import load_config
from stack.endpoints import EndpointError, SageMakerEndpoints
from stack.registry import LocalModelRegistry, RegistryError, SageMakerModelRegistry
from tests.stack.test_registry import package_request

GROUP = "churn-models"


@pytest.fixture(params=["local", "sagemaker"])
def resources(request, tmp_path, aws_credentials):
    config = load_config("local", {"state_dir": str(tmp_path)}, environ={})
    if request.param == "local":
        from stack.resources import build_resources

        yield build_resources(config)
        return
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        registry = SageMakerModelRegistry(client)
        yield SimpleNamespace(
            config=config,
            registry=registry,
            endpoints=SageMakerEndpoints(client, None, registry),
            kind="sagemaker",
        )


def register_two(registry):
    first = registry.register(package_request("PendingManualApproval"))
    second = registry.register(package_request("PendingManualApproval"))
    return first, second


def test_approve_and_reject_with_a_reason(resources):
    registry = resources.registry
    register_two(registry)
    approved = approve.set_status(registry, GROUP, 1, "Approved", "beats v0 by 0.02")
    rejected = approve.set_status(registry, GROUP, 2, "Rejected", "leaks a feature")
    assert (approved.approval_status, approved.approval_description) == (
        "Approved",
        "beats v0 by 0.02",
    )
    assert registry.get(rejected.arn).approval_status == "Rejected"
    assert registry.get(rejected.arn).approval_description == "leaks a feature"
    assert registry.latest_approved(GROUP).version == 1
    with pytest.raises(RegistryError, match="give a --reason"):
        approve.set_status(registry, GROUP, 1, "Rejected", "  ")
    with pytest.raises(RegistryError, match="no version 9"):
        approve.set_status(registry, GROUP, 9, "Approved", "x")
    with pytest.raises(RegistryError, match="status must be one of"):
        approve.set_status(registry, GROUP, 1, "PendingManualApproval", "x")


@pytest.mark.parametrize("status", ["PendingManualApproval", "Rejected"])
def test_a_package_that_is_not_approved_is_never_deployed(resources, status):
    registry = resources.registry
    package = registry.register(package_request(status))
    with pytest.raises(EndpointError, match=f"is {status}; only an Approved"):
        approve.deploy_version(resources, GROUP, package.version)
    # the deployer refuses on its own too (the pipeline's Deploy step goes there)
    with pytest.raises(EndpointError, match=f"is {status}; only an Approved"):
        resources.endpoints.create_model(
            {"Containers": [{"ModelPackageName": package.arn}]}
        )


def test_a_rejected_champion_can_no_longer_be_deployed_on_sagemaker(
    tmp_path, aws_credentials
):
    config = load_config("local", {"state_dir": str(tmp_path)}, environ={})
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        registry = SageMakerModelRegistry(client)
        resources = SimpleNamespace(
            config=config,
            registry=registry,
            endpoints=SageMakerEndpoints(client, None, registry),
        )
        registry.register(package_request("PendingManualApproval"))
        approve.set_status(registry, GROUP, 1, "Approved", "reviewed the report")
        assert approve.deploy_version(resources, GROUP, 1) == "churn-endpoint"
        assert client.describe_endpoint(EndpointName="churn-endpoint")[
            "EndpointConfigName"
        ] == ("churn-endpoint-v1")
        approve.set_status(registry, GROUP, 1, "Rejected", "drift found")
        with pytest.raises(EndpointError, match="is Rejected"):
            approve.deploy_version(resources, GROUP, 1)


def test_the_command_on_the_local_registry(tmp_path, capsys):
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    register_two(registry)
    state = ["--env", "local", "--state-dir", str(tmp_path)]
    assert (
        approve.main(
            [
                "set",
                *state,
                "--version",
                "2",
                "--status",
                "Rejected",
                "--reason",
                "worse calibration",
            ]
        )
        == 0
    )
    assert "churn-models/2: Rejected (worse calibration)" in capsys.readouterr().out
    assert approve.main(["deploy", *state, "--version", "2"]) == 1
    assert "is Rejected; only an Approved package" in capsys.readouterr().err
    assert approve.main(["list", *state]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == [
        "VERSION", "STATUS", "CREATED", "TEST", "AUC", "AS", "OF", "REASON"
    ]  # fmt: skip
    assert listing[1].split()[:2] == ["1", "PendingManualApproval"]
    assert listing[2].split()[:2] == ["2", "Rejected"]
    assert listing[2].endswith("worse calibration")


def test_list_rounds_the_test_auc(tmp_path, capsys):
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    request = package_request("Approved")
    request["CustomerMetadataProperties"] = {
        "test_auc": "0.8104115805272212",
        "as_of_date": "2026-03-31",
    }
    registry.register(request)
    registry.register(package_request("Approved"))  # no metrics in its metadata

    assert approve.main(["list", "--env", "local", "--state-dir", str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[0][3:5] == ["0.8104", "2026-03-31"]
    assert rows[1][3:5] == ["-", "-"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--version", "1", "--status", "Approved"], "required: --reason"),
        (["--version", "1", "--status", "Approved", "--reason", " "], "give a reason"),
        (["--status", "Approved", "--reason", "ok"], "required: --version"),
        (["--version", "1", "--reason", "ok"], "required: --status"),
    ],
)
def test_set_without_a_reason_is_a_usage_error(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        approve.main(["set", "--state-dir", str(tmp_path), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m pipelines.approve set")
    assert message in err
