"""The serving process: drains on SIGTERM, swaps models on SIGHUP, replaces dead workers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from tests.conftest import PROJECT_ROOT, free_port
from tests.inference.servers import wait_for_ping


@pytest.fixture
def server(model_dir, tmp_path):
    """A 2-worker server driven through its control and status files."""
    port = free_port()
    control, status = tmp_path / "control.json", tmp_path / "status.json"
    control.write_text(json.dumps({"model_dir": str(model_dir), "request": "r1"}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--control-file",
            str(control),
            "--status-file",
            str(status),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(url, process, 60)
        yield process, url, control, status
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_status(status, request, timeout=60, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(status.read_text())
        except (OSError, ValueError):
            data = {}
        if data.get("request") == request:
            return data
        time.sleep(poll)
    raise AssertionError(f"no status for {request}")


def score(url):
    request = urllib.request.Request(
        f"{url}/invocations", data=b"2,0\n", headers={"Content-Type": "text/csv"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return orjson.loads(response.read())["predictions"][0]


def test_sigterm_lets_an_in_flight_request_finish(server):
    process, url, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    body = b"2,0\n-2,0\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:4]
        )
        time.sleep(0.3)  # the request is in flight: headers in, body half sent
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        conn.sendall(body[4:])
        reply = conn.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert process.wait(timeout=30) == 0


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(server, tmp_path):
    process, url, control, status = server
    first = wait_status(status, "r1")
    before = score(url)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not a model")
    control.write_text(json.dumps({"model_dir": str(broken), "request": "r2"}))
    process.send_signal(signal.SIGHUP)
    failed = wait_status(status, "r2")
    assert failed["state"] == "failed" and "worker exited" in failed["error"]
    assert score(url) == before
    assert process.poll() is None
    # the old workers never stopped
    assert all(_alive(pid) for pid in first["worker_pids"])


def test_a_reload_replaces_every_worker_and_a_dead_worker_is_replaced(
    server, model_dir
):
    process, url, control, status = server
    first = wait_status(status, "r1")
    control.write_text(json.dumps({"model_dir": str(model_dir), "request": "r2"}))
    process.send_signal(signal.SIGHUP)
    second = wait_status(status, "r2")
    assert second["state"] == "serving"
    assert not set(second["worker_pids"]) & set(first["worker_pids"])
    victim = second["worker_pids"][0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = json.loads(status.read_text())["worker_pids"]
        if victim not in pids and len(pids) == 2:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the dead worker was not replaced")
    assert score(url) > 0


def test_a_reload_is_reported_only_once_no_old_worker_accepts(
    server, model_dir, tmp_path
):
    """Issue 21 (deploys are atomic): the status file reports a reload done only when
    every old worker has stopped accepting, so from then on every new connection is
    answered by the new model. (The old workers used to be sent SIGTERM after the
    report and kept accepting for up to ~0.1 s: a client that connected right after
    the deploy returned could still get the old model's answer.)
    """
    process, url, control, status = server
    wait_status(status, "r1")
    opposite = _opposite_model(tmp_path)
    for request, model, new_is_high in [
        ("r2", opposite, False),
        ("r3", model_dir, True),
    ]:
        control.write_text(json.dumps({"model_dir": str(model), "request": request}))
        process.send_signal(signal.SIGHUP)
        reported = wait_status(status, request, poll=0.005)
        assert reported["state"] == "serving"
        answers = [score(url) > 0.5 for _ in range(40)]
        assert answers == [new_is_high] * 40, (request, answers)


def _opposite_model(tmp_path):
    """A model that scores x1 = 2 low, where the shared one scores it high."""
    import numpy as np
    import pandas as pd

    from tests.inference.conftest import SCHEMA
    from training.hyperparameters import DEFAULTS
    from training.train import save_model, train_model

    rng = np.random.default_rng(1)

    def data(n):
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        return pd.DataFrame(
            {"id": range(n), "x1": x1, "x2": x2, "y": (x1 < -0.5).astype(int)}
        )

    folder = tmp_path / "opposite"
    params = {**DEFAULTS, "num_round": 20}
    save_model(train_model(data(500), data(200), SCHEMA, params), folder)
    return folder


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_client_that_stalls_is_disconnected_and_the_server_keeps_serving(model_dir):
    """Issue 21, item 6: headers sent, then nothing (and a connection that never
    sends a byte): both closed once the read timeout passes; others are answered
    meanwhile.
    """
    from tests.inference.servers import running_server

    with running_server(model_dir, extra=("--read-timeout", "1")) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: 100\r\n\r\n2,0"
        )
        started = time.monotonic()
        assert score(server.url) > 0  # served while those two wait
        for conn in (stalled, silent):
            with conn:
                assert conn.recv(65536) == b""  # closed by the server
        assert time.monotonic() - started < 5
        assert score(server.url) > 0
