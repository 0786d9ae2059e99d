"""Shared fixtures: small seeded Snowflake copies, free ports, configs in tmp folders."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datagen.seed import ensure_demo_data
from stack.config import Config, load_config
from stack.warehouse import EmbeddedWarehouse

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL_CUSTOMERS = 3000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def seeded_snowflake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB folder holding the demo tables for SMALL_CUSTOMERS customers (seed 7)."""
    root = tmp_path_factory.mktemp("seeded") / "snowflake"
    ensure_demo_data(EmbeddedWarehouse(root, "MLOPS", "CHURN"), SMALL_CUSTOMERS, 7)
    return root


@pytest.fixture
def warehouse(seeded_snowflake_dir: Path, tmp_path: Path) -> EmbeddedWarehouse:
    """A private copy of the seeded embedded Snowflake (tests may write to it)."""
    root = tmp_path / "snowflake"
    shutil.copytree(seeded_snowflake_dir, root)
    return EmbeddedWarehouse(root, "MLOPS", "CHURN")


@pytest.fixture
def local_config(tmp_path: Path) -> Config:
    return load_config(
        "local",
        {
            "state_dir": str(tmp_path / "state"),
            "local_endpoint.port": free_port(),
            "demo.customers": SMALL_CUSTOMERS,
        },
        environ={},
    )


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region for moto; never real ones."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipelines.run ARGS`` as a user would, from the project root."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pipelines.run", *args],
        cwd=PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh ``python -c`` from the project root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def fakesnow_server(seeded_snowflake_dir: Path, tmp_path: Path) -> Iterator[int]:
    """A fakesnow HTTP server on 127.0.0.1 over a copy of the seeded data; its port."""
    root = tmp_path / "served"
    shutil.copytree(seeded_snowflake_dir, root)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fakesnow_shared_server",
            str(port),
            str(root),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, "the fakesnow server")
        yield port
    finally:
        _stop(process)


def connect_to_fakesnow_server(port: int, **settings: Any) -> Any:
    """The real Snowflake connector, connected to a ``fakesnow_server`` (MLOPS.CHURN,
    a fake login, short timeouts: a statement it cannot run must not make the
    connector retry for minutes); ``settings`` override any of these.
    """
    import snowflake.connector

    return snowflake.connector.connect(
        **{
            "account": "fakesnow",
            "user": "fake",
            "password": "fake",
            "host": "127.0.0.1",
            "port": port,
            "protocol": "http",
            "database": "MLOPS",
            "schema": "CHURN",
            "login_timeout": 20,
            "network_timeout": 120,
            **settings,
        }
    )


@pytest.fixture
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1, speaking the AWS APIs; yields its endpoint URL."""
    port = free_port()
    executable = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(executable), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, "moto_server")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within 30 s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
