import http.client
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from features import FeatureSchema
from stack.endpoints import EndpointError, LocalEndpoints
from stack.objectstore import LocalObjectStore
from stack.registry import LocalModelRegistry
from tests.conftest import free_port
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

SCHEMA = FeatureSchema.from_dict(
    {"entity_id": "id", "label": "y", "features": [{"name": "x1"}, {"name": "x2"}]}
)


@pytest.fixture
def deployer(tmp_path):
    store = LocalObjectStore(tmp_path / "s3")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    endpoints = LocalEndpoints(
        tmp_path / "endpoints", store, registry, port=free_port(), startup_timeout=60
    )
    yield endpoints
    endpoints.stop("ep")


def model_archive(tmp_path, name, broken=False, sign=1):
    """A small model; ``sign=-1`` learns the opposite rule, so its scores differ."""
    rng = np.random.default_rng(0)

    def data(n):
        x1 = rng.normal(size=n)
        return pd.DataFrame(
            {
                "id": range(n),
                "x1": x1,
                "x2": rng.normal(size=n),
                "y": (sign * x1 > 0).astype(int),
            }
        )

    folder = tmp_path / name
    save_model(
        train_model(data(300), data(100), SCHEMA, {**DEFAULTS, "num_round": 5}), folder
    )
    if broken:
        (folder / "model.json").write_text("{not a model")
    archive = tmp_path / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    return archive


def register(deployer, archive, status="Approved"):
    uri = f"s3://bucket/models/{archive.name}"
    deployer.store.upload_file(archive, uri)
    return deployer.registry.register(
        {
            "ModelPackageGroupName": "g",
            "ModelApprovalStatus": status,
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": uri}]
            },
        }
    )


def deploy(deployer, package, config_name):
    model = deployer.create_model({"Containers": [{"ModelPackageName": package.arn}]})
    deployer.create_endpoint_config(
        {
            "EndpointConfigName": config_name,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model}],
        }
    )
    return deployer.create_or_update_endpoint(
        {"EndpointName": "ep", "EndpointConfigName": config_name}
    )


def ping(url):
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
        return response.status


def test_deploy_update_and_stop(deployer, tmp_path):
    first = deploy(deployer, register(deployer, model_archive(tmp_path, "m1")), "c1")
    assert first.status == "InService" and ping(first.url) == 200
    second = deploy(deployer, register(deployer, model_archive(tmp_path, "m2")), "c2")
    # the same serving process on the same port, now with the second model's workers
    assert second.pid == first.pid and ping(second.url) == 200
    assert second.model_digest != first.model_digest
    assert deployer.describe("ep").config_name == "c2"
    assert deployer.stop("ep")
    assert deployer.describe("ep").status == "Stopped"
    with pytest.raises(OSError):
        ping(second.url)


def test_a_model_that_cannot_load_leaves_the_serving_one_in_place(deployer, tmp_path):
    good = deploy(deployer, register(deployer, model_archive(tmp_path, "good")), "c1")
    broken = register(deployer, model_archive(tmp_path, "bad", broken=True))
    with pytest.raises(EndpointError, match="cannot be served"):
        deploy(deployer, broken, "c2")
    assert deployer.describe("ep").pid == good.pid and ping(good.url) == 200


@pytest.mark.parametrize("status", ["PendingManualApproval", "Rejected"])
def test_only_approved_packages_are_deployed(deployer, tmp_path, status):
    package = register(deployer, model_archive(tmp_path, "m"), status=status)
    with pytest.raises(EndpointError, match=f"is {status}; only an Approved package"):
        deployer.create_model({"Containers": [{"ModelPackageName": package.arn}]})


def test_a_busy_port_is_reported(deployer, tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", deployer.port))
        squatter.listen()
        with pytest.raises(EndpointError, match="is in use by another program"):
            deploy(deployer, register(deployer, model_archive(tmp_path, "m")), "c1")


def test_deploying_the_model_that_serves_is_a_no_op(deployer, tmp_path):
    package = register(deployer, model_archive(tmp_path, "m1"))
    first = deploy(deployer, package, "c1")
    again = deploy(deployer, package, "c2")
    # same process, same model: nothing was restarted or reloaded ...
    assert (again.pid, again.model_digest, again.updated_at) == (
        first.pid,
        first.model_digest,
        first.updated_at,
    )
    # ... but the endpoint runs on the config it was updated to, as on SageMaker
    assert deployer.describe("ep").config_name == "c2"
    assert deploy(deployer, package, "c2") == deployer.describe("ep")


def score(url, body=b"2,0\n"):
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "text/csv"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return float(orjson.loads(response.read())["predictions"][0])


def test_a_redeploy_under_load_fails_no_request(deployer, tmp_path):
    """Requests keep flowing while the model is swapped, on fresh and on keep-alive
    connections: none fails, and the answers change from the old model's to the new
    one's.
    """
    old = deploy(deployer, register(deployer, model_archive(tmp_path, "a")), "c1")
    new_package = register(deployer, model_archive(tmp_path, "b", sign=-1))
    before = score(old.url)
    stop = threading.Event()
    results, errors = [], []

    def hammer(keep_alive):
        port = int(old.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            try:
                if keep_alive:  # one connection, reused until the server closes it
                    conn.request(
                        "POST", "/invocations", b"2,0\n", {"Content-Type": "text/csv"}
                    )
                    answer = conn.getresponse().read()
                    results.append(orjson.loads(answer)["predictions"][0])
                else:
                    results.append(score(old.url))
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(exc))
        conn.close()

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        served_before_swap = len(results)
        deploy(deployer, new_package, "c2")
        swap_done = len(results)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    after = score(old.url)
    assert errors == []
    assert before > 0.5 > after  # the new model answers now
    assert swap_done > served_before_swap  # requests were served during the swap
    assert results[0] == pytest.approx(before) and results[-1] == pytest.approx(after)


def test_deploy_package_reports_what_serves_and_repeats_as_a_no_op(deployer, tmp_path):
    package = register(deployer, model_archive(tmp_path, "m1"))
    first = deployer.deploy_package(package.arn, "ep")
    assert first.changed and first.variant_name == "AllTraffic"
    assert ping(first.endpoint.url) == 200
    again = deployer.deploy_package(package.arn, "ep")
    assert not again.changed and again.endpoint == first.endpoint
    assert deployer.serving_package("ep") == package.arn
    assert deployer.serving_package("no-such-endpoint") is None


def test_a_relative_state_folder_serves(tmp_path, monkeypatch):
    """The server runs in its log folder, so the paths it is given are absolute even
    when the state folder is relative (the default ``.state``).
    """
    monkeypatch.chdir(tmp_path)
    state = Path("state")
    endpoints = LocalEndpoints(
        state / "endpoints",
        LocalObjectStore(state / "s3"),
        LocalModelRegistry(state / "registry", "us-east-1"),
        port=free_port(),
        startup_timeout=60,
    )
    try:
        package = register(endpoints, model_archive(tmp_path, "m1"))
        report = endpoints.deploy_package(package.arn, "ep")
        assert ping(report.endpoint.url) == 200
    finally:
        endpoints.stop("ep")


def _large_csv(megabytes=4):
    """A CSV body of about ``megabytes`` MB: above 16 KB, so Arrow's reader parses it."""
    rng = np.random.default_rng(1)
    rows = int(megabytes * 1024 * 1024 / 16)
    values = rng.normal(size=(rows, 2))
    return "".join(f"{a:.5f},{b:.5f}\n" for a, b in values).encode()


def test_swaps_under_load_with_large_and_small_bodies_answer_every_request(
    deployer, tmp_path
):
    """Issue 21, item 1: several swaps while clients send ~4 MB CSV bodies (Arrow's
    reader, which a SIGTERM used to cancel: 500 "ArrowCancelled ... signal 15") and
    small ones on fresh and keep-alive connections: every request is answered 200.
    """
    packages = [
        register(deployer, model_archive(tmp_path, "a")),
        register(deployer, model_archive(tmp_path, "b", sign=-1)),
    ]
    info = deploy(deployer, packages[0], "c0")
    port = int(info.url.rsplit(":", 1)[1])
    large = _large_csv()
    assert len(large) > 3_500_000
    stop = threading.Event()
    statuses: list[tuple[int, int]] = []
    errors: list[str] = []

    def hammer(body, keep_alive):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "text/csv"})
                response = conn.getresponse()
                response.read()
                statuses.append((len(body), response.status))
                if response.status != 200:
                    errors.append(f"{response.status} for a {len(body)}-byte body")
                if not keep_alive or response.will_close:
                    conn.close()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(exc))
                conn.close()
        conn.close()

    loads = [(large, True), (large, False), (b"2,0\n", True), (b"2,0\n-1,1\n", False)]
    threads = [threading.Thread(target=hammer, args=load) for load in loads]
    for thread in threads:
        thread.start()
    swaps = 4
    try:
        for i in range(1, swaps + 1):
            time.sleep(0.5)
            deploy(deployer, packages[i % 2], f"c{i}")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    big = sum(size == len(large) for size, _ in statuses)
    print(f"{len(statuses)} requests ({big} of 4 MB) over {swaps} swaps: {errors}")
    assert errors == []
    assert big > 20 and len(statuses) > 100


def test_a_move_to_a_taken_port_leaves_the_old_model_serving(deployer, tmp_path):
    """Issue 21, item 2: a deploy that cannot start where it was asked to serve (a port
    taken) fails naming the cause, and the old server, model and port are untouched.
    """
    import socket

    old = deploy(deployer, register(deployer, model_archive(tmp_path, "a")), "c1")
    before = score(old.url)
    new_package = register(deployer, model_archive(tmp_path, "b", sign=-1))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        deployer.port = squatter.getsockname()[1]
        with pytest.raises(EndpointError, match=f"port {deployer.port} .* in use"):
            deploy(deployer, new_package, "c2")
    assert ping(old.url) == 200 and score(old.url) == pytest.approx(before)
    assert deployer.describe("ep") == old
    # the control file still names the serving model: a restart serves it again
    control = orjson.loads(deployer._server_file("ep", "control").read_bytes())
    assert control["model_dir"] == old.model_dir


def test_a_move_to_a_free_port_starts_there_before_the_old_port_closes(
    deployer, tmp_path
):
    old = deploy(deployer, register(deployer, model_archive(tmp_path, "a")), "c1")
    deployer.port = free_port()
    moved = deploy(deployer, register(deployer, model_archive(tmp_path, "b")), "c2")
    assert moved.port == deployer.port != old.port and ping(moved.url) == 200
    with pytest.raises(OSError):
        ping(old.url)


def test_a_dead_server_reads_failed_and_the_next_deploy_restarts_it_on_its_port(
    deployer, tmp_path
):
    """The supervisor killed: ``describe`` (and ``pipelines.endpoint status``) says
    Failed, the orphaned workers exit, and the next deploy starts a server on the
    port the endpoint had, even when the configured port has changed since.
    """
    import os
    import signal

    package = register(deployer, model_archive(tmp_path, "a"))
    first = deployer.deploy_package(package.arn, "ep").endpoint
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while deployer.describe("ep").status != "Failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert deployer.describe("ep").status == "Failed"
    deployer.port = free_port()  # the configuration moved on; the endpoint did not
    deployer.use_serving_port("ep")
    again = deployer.deploy_package(package.arn, "ep")
    assert again.changed and again.endpoint.port == first.port
    assert again.endpoint.pid != first.pid and ping(again.endpoint.url) == 200


def test_a_redeploy_after_a_code_change_serves_the_new_code(deployer, tmp_path):
    """Issue 21: the supervisor keeps running across redeploys, but each new
    generation of workers runs the code a server started now would run (the
    launcher's; the local runner's is the newly staged image), and a code change
    reloads the workers even when the model is the same.
    """
    import shutil
    import sys

    from stack.endpoints import PROJECT_ROOT, _server_environment

    package = register(deployer, model_archive(tmp_path, "a"))
    first = deployer.deploy_package(package.arn, "ep").endpoint
    assert _ping_body(first.url) == b""
    # the new code: the inference package, its /ping saying so
    code = tmp_path / "code"
    shutil.copytree(
        PROJECT_ROOT / "inference",
        code / "inference",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    app = code / "inference" / "app.py"
    empty_ping = '_PONG = Reply(200, b"", "text/plain")'
    assert empty_ping in app.read_text()
    app.write_text(
        app.read_text().replace(empty_ping, empty_ping.replace('b""', 'b"new"'))
    )

    def new_code(command):
        env = {**_server_environment(), "PYTHONPATH": f"{code}:{PROJECT_ROOT}"}
        return [sys.executable, *command[1:]], env

    deployer.server_launcher = new_code
    again = deployer.deploy_package(package.arn, "ep")
    assert again.changed and again.endpoint.pid == first.pid  # the same server
    assert [_ping_body(first.url) for _ in range(10)] == [b"new"] * 10
    assert not deployer.deploy_package(package.arn, "ep").changed  # now it serves


def _ping_body(url):
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:  # noqa: S310
        return response.read()


def test_a_recorded_pid_that_another_process_took_reads_failed_and_is_not_signalled(
    deployer, tmp_path
):
    """Issue 21: after the server died and its pid went to another process (a
    reboot, say), the endpoint reads Failed and ``stop`` does not signal that process
    (a deploy would have sent it SIGHUP, which ends most programs).
    """
    import json
    import subprocess
    import sys

    deploy(deployer, register(deployer, model_archive(tmp_path, "a")), "c1")
    record = deployer.root / "endpoints" / "ep.json"
    info = json.loads(record.read_text())
    assert deployer.stop("ep")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record.write_text(json.dumps({**info, "pid": other.pid}))
        assert deployer.describe("ep").status == "Failed"
        assert not deployer.stop("ep")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_server_holds_none_of_the_deployers_secrets(
    deployer, tmp_path, monkeypatch
):
    """Issue 21, item 5: the supervisor and its workers get only the variables they
    need, read from /proc/<pid>/environ; the deployer's Snowflake password is not one.
    """
    monkeypatch.setenv("MLOPS_SNOWFLAKE__PASSWORD", "sentinel-password")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-key")
    info = deploy(deployer, register(deployer, model_archive(tmp_path, "a")), "c1")
    status = orjson.loads(deployer._server_file("ep", "status").read_bytes())
    pids = [info.pid, *status["worker_pids"]]
    assert len(pids) == 1 + deployer.workers
    allowed = {"PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "OMP_NUM_THREADS"}
    allowed |= {"PYTHONPATH"}
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0")}
        assert names - {""} <= allowed, (pid, names - allowed)
        assert b"sentinel" not in environ
