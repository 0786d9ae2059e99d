"""Approval → promotion → deployment, against moto: a package registered and approved
in dev's registry, the EventBridge event AWS documents, the GitHub dispatch it sends,
and the commands the promote workflow then runs, ending on staging's endpoint.

The event is AWS's sample for "SageMaker Model Package State Change"
(https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html#eventbridge-model-package),
kept as the page shows it in ``fixtures/model_package_state_change.json`` (its
``source`` key appears twice there; JSON keeps the last), with only the package's
ARN, group, version, image, model URL and status replaced by this test's.

moto (5.2) runs no endpoint and has no UpdateEndpoint: the deployment is checked in
what moto received (the endpoint's config, its model, the package that model names,
and the bytes of the archive that package names), and UpdateEndpoint is answered at
botocore's boundary by ``UpdateEndpointStub`` as in tests/stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pipelines import approval_events, approve, promote, rollback
from stack.resources import AwsClients
from tests.stack.test_sagemaker_deploy import UpdateEndpointStub

ROLE = "arn:aws:iam::000000000000:role/test-sagemaker"
SAMPLE = Path(__file__).parent / "fixtures" / "model_package_state_change.json"
DEV_GROUP, STAGING_GROUP = "churn-models-dev", "churn-models-staging"
DEV_BUCKET, STAGING_BUCKET = "mlops-dev-artifacts", "mlops-staging-artifacts"
STAGING_ENDPOINT = "churn-endpoint-staging"
IMAGE = "000000000000.dkr.ecr.us-east-1.amazonaws.com/snowflake-sagemaker-mlops:1.4.2"


class FakeGitHub:
    """GitHub's ``POST /repos/{owner}/{repo}/dispatches`` on 127.0.0.1: records what
    it is sent and answers 204, as GitHub does.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers["Authorization"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def aws(aws_credentials, monkeypatch):
    """moto, both environments' buckets, the role CD passes, and UpdateEndpoint
    answered on every SageMaker client the commands build (their requests in
    ``updates``).
    """
    monkeypatch.setenv("MLOPS_AWS__ROLE_ARN", ROLE)
    # no Snowflake settings: promote, deploy, smoke and rollback never use Snowflake
    monkeypatch.delenv("MLOPS_SNOWFLAKE__ACCOUNT", raising=False)
    stubs: list[UpdateEndpointStub] = []
    made = AwsClients.client

    def client(self, service):
        built = made(self, service)
        if service == "sagemaker":
            stubs.append(UpdateEndpointStub(built))
        return built

    monkeypatch.setattr(AwsClients, "client", client)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in (DEV_BUCKET, STAGING_BUCKET):
            s3.create_bucket(Bucket=bucket)
        yield {
            "s3": s3,
            "sagemaker": boto3.client("sagemaker", region_name="us-east-1"),
            "updates": lambda: [r for s in stubs for r in s.requests],
        }


@pytest.fixture
def github(monkeypatch, aws):
    """The dispatch settings the Lambda gets from infra/approval-deploy.yaml, with
    GitHub's API on a local port and the token in (moto's) Secrets Manager.
    """
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    name = "churn/dev/approval-dispatch"  # infra/parameters/dev.json's
    secrets.create_secret(Name=name, SecretString="t0ken")
    fake = FakeGitHub()
    for key, value in {
        "DISPATCH_TARGET": "github",
        "DISPATCH_SECRET_NAME": name,
        "GITHUB_REPOSITORY": "acme/churn",
        "GITHUB_API_URL": fake.url,
    }.items():
        monkeypatch.setenv(key, value)
    yield fake
    fake.close()


def model_archive(seed: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = f"model {seed}".encode()
        info = tarfile.TarInfo("model.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def register_in_dev(aws, seed: str, status: str = "PendingManualApproval") -> str:
    """A trained model in dev's bucket and registry, as the dev pipeline leaves it."""
    key = f"churn/train/{seed}/model.tar.gz"
    aws["s3"].put_object(Bucket=DEV_BUCKET, Key=key, Body=model_archive(seed))
    aws["s3"].put_object(
        Bucket=DEV_BUCKET, Key=f"churn/eval/{seed}/evaluation.json", Body=b"{}"
    )
    client = aws["sagemaker"]
    with contextlib.suppress(client.exceptions.ClientError):  # made already
        client.create_model_package_group(ModelPackageGroupName=DEV_GROUP)
    return client.create_model_package(
        ModelPackageGroupName=DEV_GROUP,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [
                {"Image": IMAGE, "ModelDataUrl": f"s3://{DEV_BUCKET}/{key}"}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://{DEV_BUCKET}/churn/eval/{seed}/evaluation.json",
                }
            }
        },
        CustomerMetadataProperties={"test_auc": "0.81"},
    )["ModelPackageArn"]


def approve_in_dev(aws, arn: str, status: str = "Approved") -> None:
    aws["sagemaker"].update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription="review"
    )


def documented_event(aws, arn: str) -> dict:
    """AWS's sample event with this package in it."""
    event = json.loads(SAMPLE.read_text())
    described = aws["sagemaker"].describe_model_package(ModelPackageName=arn)
    event["resources"] = [arn]
    detail = event["detail"]
    detail["ModelPackageArn"] = arn
    detail["ModelPackageGroupName"] = described["ModelPackageGroupName"]
    detail["ModelPackageVersion"] = described["ModelPackageVersion"]
    detail["ModelApprovalStatus"] = described["ModelApprovalStatus"]
    detail["InferenceSpecification"] = described["InferenceSpecification"]
    return event


def key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def sha256_at(s3, uri: str) -> str:
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def promote_and_deploy(arn: str, capsys) -> dict[str, str]:
    """What .github/workflows/promote-env.yml runs for staging, with ``arn`` from the
    dispatch's client_payload.
    """
    assert promote.main(["--package-arn", arn, "--to-env", "staging"]) == 0
    outputs = key_values(capsys.readouterr().out)
    assert approve.main(["deploy", "--env", "staging", "--package-arn", arn]) == 0
    deployed = key_values(capsys.readouterr().out)
    assert deployed["model_sha256"] == outputs["model_sha256"]  # the CD log shows it
    return outputs


def test_an_approval_in_dev_deploys_that_package_in_staging(aws, github, capsys):
    arn = register_in_dev(aws, "a")
    approve_in_dev(aws, arn)

    answer = approval_events.handle(documented_event(aws, arn), None)

    assert answer["deploy"] is True
    (dispatch,) = github.requests
    assert dispatch["path"] == "/repos/acme/churn/dispatches"
    assert dispatch["authorization"] == "Bearer t0ken"
    assert dispatch["body"] == {
        "event_type": "model-approved",
        "client_payload": {"package_arn": arn, "version": "1.4.2"},
    }

    outputs = promote_and_deploy(
        dispatch["body"]["client_payload"]["package_arn"], capsys
    )

    sagemaker, s3 = aws["sagemaker"], aws["s3"]
    source = sagemaker.describe_model_package(ModelPackageName=arn)
    source_url = source["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    target = sagemaker.describe_model_package(
        ModelPackageName=outputs["target_package_arn"]
    )
    assert target["ModelPackageGroupName"] == STAGING_GROUP
    assert target["ModelApprovalStatus"] == "Approved"
    assert target["CustomerMetadataProperties"]["source_model_package_arn"] == arn
    target_url = target["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert target_url.startswith(f"s3://{STAGING_BUCKET}/churn/promoted/")
    assert target["InferenceSpecification"]["Containers"][0]["Image"] == IMAGE
    # the same bytes in both environments, and the digest the CD printed
    assert sha256_at(s3, target_url) == sha256_at(s3, source_url)
    assert sha256_at(s3, target_url) == outputs["model_sha256"]
    report = target["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert report.startswith(f"s3://{STAGING_BUCKET}/")

    # what staging's endpoint was built from: endpoint → config → model → package
    endpoint = sagemaker.describe_endpoint(EndpointName=STAGING_ENDPOINT)
    config = sagemaker.describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"]
    )
    model = sagemaker.describe_model(
        ModelName=config["ProductionVariants"][0]["ModelName"]
    )
    assert model["PrimaryContainer"]["ModelPackageName"] == target["ModelPackageArn"]
    assert model["ExecutionRoleArn"] == ROLE

    # the same event again (SageMaker may send several): the same package, no new
    # version, no new endpoint config
    approval_events.handle(documented_event(aws, arn), None)
    again = promote_and_deploy(
        github.requests[-1]["body"]["client_payload"]["package_arn"], capsys
    )
    assert again["target_package_arn"] == outputs["target_package_arn"]
    assert (
        sagemaker.describe_endpoint(EndpointName=STAGING_ENDPOINT)["EndpointConfigName"]
        == endpoint["EndpointConfigName"]
    )
    assert aws["updates"]() == []


def test_the_documented_rejection_dispatches_nothing(aws, github):
    arn = register_in_dev(aws, "a")
    approve_in_dev(aws, arn, "Rejected")
    event = documented_event(aws, arn)
    assert event["detail"]["ModelApprovalStatus"] == "Rejected"  # as in AWS's sample

    answer = approval_events.handle(event, None)

    assert answer == {
        "deploy": False,
        "package_arn": arn,
        "reason": f"{arn} is Rejected: ignored",
    }
    assert github.requests == []


def test_an_older_version_approved_again_deploys_nothing(aws, github):
    older = register_in_dev(aws, "a")
    newer = register_in_dev(aws, "b")
    approve_in_dev(aws, newer)
    approve_in_dev(aws, older)  # approved after the newer one

    answer = approval_events.handle(documented_event(aws, older), None)

    assert not answer["deploy"]
    assert "version 2 is the newest Approved one" in answer["reason"]
    assert github.requests == []


def test_the_event_is_checked_against_the_registry_not_trusted(aws, github):
    arn = register_in_dev(aws, "a")
    approve_in_dev(aws, arn)
    event = documented_event(aws, arn)
    approve_in_dev(aws, arn, "Rejected")  # rejected before the event arrived

    assert not approval_events.handle(event, None)["deploy"]
    with pytest.raises(approval_events.EventError, match="not a 'SageMaker Model"):
        approval_events.handle({**event, "detail-type": "Something Else"}, None)
    assert github.requests == []


def test_a_package_not_approved_is_not_promoted(aws, capsys):
    arn = register_in_dev(aws, "a")
    assert promote.main(["--package-arn", arn, "--to-env", "staging"]) == 1
    assert (
        "is PendingManualApproval: only an Approved package" in capsys.readouterr().err
    )


def test_rollback_restores_the_previous_endpoint_config(aws, github, capsys):
    first = register_in_dev(aws, "a")
    approve_in_dev(aws, first)
    promote_and_deploy(first, capsys)
    sagemaker = aws["sagemaker"]
    first_config = sagemaker.describe_endpoint(EndpointName=STAGING_ENDPOINT)[
        "EndpointConfigName"
    ]
    second = register_in_dev(aws, "b")
    approve_in_dev(aws, second)
    promote_and_deploy(second, capsys)
    second_config = sagemaker.describe_endpoint(EndpointName=STAGING_ENDPOINT)[
        "EndpointConfigName"
    ]
    assert second_config != first_config

    # the CD's failure path names what it deployed: the first is not serving
    assert rollback.main(["--env", "staging", "--only-if-serving", first]) == 0
    assert "does not serve" in capsys.readouterr().out
    assert len(aws["updates"]()) == 1  # only the second deployment

    assert rollback.main(["--env", "staging", "--only-if-serving", second]) == 0
    out = capsys.readouterr().out
    assert f"rolled back to {first_config}" in out
    assert (
        sagemaker.describe_endpoint(EndpointName=STAGING_ENDPOINT)["EndpointConfigName"]
        == first_config
    )
    assert aws["updates"]()[-1]["EndpointConfigName"] == first_config

    # the first config replaced nothing: a second rollback has nowhere to go
    assert rollback.main(["--env", "staging"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "--package-arn", "churn-models-dev/1", "--to-env", "staging"],
        [
            "promote",
            "--package-arn",
            "arn:aws:sagemaker:us-east-1:0:x",
            "--to-env",
            "prod",
        ],
        [
            "promote",
            "--package-arn",
            "arn:aws:sagemaker:us-east-1:000000000000:model-package/churn-models-dev/1",
            "--to-env",
            "qa",
        ],
        ["approve", "deploy", "--env", "staging", "--package-arn", "v1"],
        ["rollback", "--env", "qa"],
        ["rollback", "--env", "staging", "--only-if-serving", "arn:aws:s3:::bucket"],
        ["rollback", "--env", "staging", "--snowflake-release", "latest; drop"],
    ],
)
def test_bad_arns_and_environments_exit_2_before_any_call(monkeypatch, capsys, command):
    def no_clients(self, service):
        raise AssertionError(f"a {service} client was made")

    monkeypatch.setattr(AwsClients, "client", no_clients)
    modules = {"promote": promote, "approve": approve, "rollback": rollback}
    try:
        code = modules[command[0]].main(command[1:])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert "error" in capsys.readouterr().err
