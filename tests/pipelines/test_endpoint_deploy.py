"""The deploy commands on a local endpoint (issue 21, item 2): they swap the model on
the port the endpoint serves, a deploy that fails leaves the old model serving and
exits non-zero naming the cause, and ``approve deploy`` keeps data capture.
"""

import json
import os
import signal
import socket
import time

import pytest

from pipelines import approve, endpoint, rollback
from stack.config import load_config
from stack.resources import build_resources
from tests.conftest import free_port
from tests.stack.test_endpoints import model_archive, ping, score

GROUP = "churn-models"


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A local state folder whose endpoint serves on one port while the configured
    port is another, taken by some other program.
    """
    # the server starts from this interpreter and checkout, not the staged image
    monkeypatch.setattr(endpoint, "serve_from_image", lambda resources: None)
    monkeypatch.setattr(approve, "serve_from_image", lambda resources: None)
    serving_port = free_port()
    monkeypatch.setenv("MLOPS_LOCAL_ENDPOINT__PORT", str(serving_port))
    config = load_config("local", {"state_dir": str(tmp_path / "state")})
    resources = build_resources(config)
    yield resources, serving_port
    resources.endpoints.stop(config.sagemaker.endpoint_name)


def register(resources, tmp_path, name, **kwargs):
    archive = model_archive(tmp_path, name, **kwargs)
    uri = f"s3://mlops-local/models/{archive.name}"
    resources.store.upload_file(archive, uri)
    return resources.registry.register(
        {
            "ModelPackageGroupName": GROUP,
            "ModelApprovalStatus": "Approved",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": uri}]
            },
        }
    )


def test_a_deploy_swaps_on_the_serving_port_and_a_failed_one_changes_nothing(
    state, tmp_path, monkeypatch, capsys
):
    resources, port = state
    first = register(resources, tmp_path, "a")
    argv = ["deploy", "--state-dir", str(resources.config.state_dir)]
    assert endpoint.main([*argv, "--package", first.arn]) == 0
    url = f"http://127.0.0.1:{port}"
    assert ping(url) == 200
    with socket.socket() as squatter:  # the configured port is now someone else's
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        monkeypatch.setenv("MLOPS_LOCAL_ENDPOINT__PORT", str(squatter.getsockname()[1]))
        second = register(resources, tmp_path, "b", sign=-1)
        assert endpoint.main([*argv, "--package", second.arn]) == 0
        assert f"127.0.0.1:{port}" in capsys.readouterr().out
        # from the moment the deploy returned, every new connection gets model b
        answers = [score(url) for _ in range(20)]
        serving = answers[0]
        assert serving < 0.5 and answers == [pytest.approx(serving)] * 20
        broken = register(resources, tmp_path, "c", broken=True)
        assert endpoint.main([*argv, "--package", broken.arn]) == 1
        assert "the model cannot be served" in capsys.readouterr().err
        assert approve.main([*argv, "--version", str(broken.version)]) == 1
        assert "the model cannot be served" in capsys.readouterr().err
    assert ping(url) == 200 and score(url) == pytest.approx(serving)
    name = resources.config.sagemaker.endpoint_name
    assert resources.endpoints.serving_package(name) == second.arn
    assert endpoint.main(["status", *argv[1:]]) == 0
    assert f"{name}: InService {url}" in capsys.readouterr().out


def test_approve_deploy_keeps_data_capture(state, tmp_path):
    resources, port = state
    package = register(resources, tmp_path, "a")
    where = approve.deploy_version(resources, GROUP, package.version)
    assert where == f"http://127.0.0.1:{port}"
    endpoints = resources.endpoints
    info = endpoints.describe(resources.config.sagemaker.endpoint_name)
    config = json.loads(
        (endpoints.root / "endpoint-configs" / f"{info.config_name}.json").read_text()
    )
    wanted = resources.config.deployment.data_capture_s3_uri
    assert wanted and config["DataCaptureConfig"]["DestinationS3Uri"] == wanted
    # the serving workers were given it
    control = json.loads(endpoints._server_file(info.name, "control").read_text())
    assert control["data_capture_config"] == config["DataCaptureConfig"]


def test_a_dead_server_reads_failed_in_status_and_the_next_deploy_restarts_it(
    state, tmp_path, capsys
):
    """Issue 21: the supervisor killed (kill -9, out of memory): ``status`` says the
    endpoint is Failed and how to recover, and the next command that deploys (here
    ``deploy`` without ``--package``: the newest Approved, the one that served)
    starts a server again on the endpoint's port.
    """
    resources, port = state
    register(resources, tmp_path, "a")
    argv = ["--state-dir", str(resources.config.state_dir)]
    assert endpoint.main(["deploy", *argv]) == 0
    name = resources.config.sagemaker.endpoint_name
    dead = resources.endpoints.describe(name).pid
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10  # the kill takes effect
    while resources.endpoints.describe(name).status != "Failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    capsys.readouterr()
    assert endpoint.main(["status", *argv]) == 0
    out = capsys.readouterr().out
    assert f"{name}: Failed" in out and "the next deploy restarts it" in out
    assert endpoint.main(["deploy", *argv]) == 0
    assert f"{name}: deployed" in capsys.readouterr().out
    restarted = resources.endpoints.describe(name)
    assert restarted.status == "InService" and restarted.port == port
    assert restarted.pid != dead and ping(f"http://127.0.0.1:{port}") == 200


def test_rollback_serves_the_previous_model_again_unless_another_package_serves(
    state, tmp_path, capsys
):
    """``pipelines.rollback`` on a local endpoint: after A then B, it serves A again
    (its archive's digest and its scores), on the same port; ``--only-if-serving``
    with a package that does not serve changes nothing (a CD's failure path after a
    deployment that never switched).
    """
    resources, port = state
    argv = ["--state-dir", str(resources.config.state_dir)]
    name = resources.config.sagemaker.endpoint_name
    url = f"http://127.0.0.1:{port}"
    first = register(resources, tmp_path, "a")
    assert endpoint.main(["deploy", *argv, "--package", first.arn]) == 0
    served_a = resources.endpoints.describe(name)
    score_a = score(url)
    second = register(resources, tmp_path, "b", sign=-1)
    assert endpoint.main(["deploy", *argv, "--package", second.arn]) == 0
    score_b = score(url)
    assert score_b != pytest.approx(score_a)
    capsys.readouterr()

    # B serves, so a rollback guarded by A does nothing
    assert rollback.main([*argv, "--only-if-serving", first.arn]) == 0
    assert f"{name} does not serve {first.arn}: nothing rolled back" in (
        capsys.readouterr().out
    )
    assert resources.endpoints.serving_package(name) == second.arn
    assert score(url) == pytest.approx(score_b)

    assert rollback.main([*argv, "--only-if-serving", second.arn]) == 0
    assert f"serves {first.arn}" in capsys.readouterr().out
    now = resources.endpoints.describe(name)
    assert now.config_name == served_a.config_name
    assert now.model_digest == served_a.model_digest
    assert now.port == port and now.pid == served_a.pid  # swapped, not restarted
    assert resources.endpoints.serving_package(name) == first.arn
    assert score(url) == pytest.approx(score_a)
