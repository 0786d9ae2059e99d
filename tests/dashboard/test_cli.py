"""``python -m dashboard``: configuration checked first, then Streamlit on 127.0.0.1;
``python -m dashboard.screenshot``: a PNG of every page from headless Chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.__main__ import child_environment, main, streamlit_command
from dashboard.screenshot import page_urls
from tests.conftest import PROJECT_ROOT, free_port
from tests.dashboard.conftest import DashboardState

CHROMIUM = Path("/usr/bin/chromium")


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_command_line_is_local_headless_and_without_telemetry() -> None:
    command = streamlit_command(8555)

    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4].endswith("dashboard/app.py")
    assert _option(command, "--server.address") == "127.0.0.1"
    assert _option(command, "--server.port") == "8555"
    assert _option(command, "--server.headless") == "true"
    assert _option(command, "--browser.gatherUsageStats") == "false"


def test_environment_passes_the_configuration(tmp_path: Path) -> None:
    child = child_environment("test", str(tmp_path / "s"))
    assert child["MLOPS_ENV"] == "test"
    assert child["MLOPS_STATE_DIR"] == str((tmp_path / "s").resolve())


def test_bad_configuration_exits_2_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--env", "nowhere"]) == 2
    assert "unknown environment 'nowhere'" in capsys.readouterr().err
    assert main(["--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err


def test_serves_on_127_0_0_1_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashboard",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=2
                ) as r:
                    health = r.read().decode()
                    break
            except OSError:
                time.sleep(0.2)
        assert health == "ok", (
            process.stdout.read() if process.poll() is not None else ""
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        # nothing listens on another address of this machine
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with socket.socket() as probe:
                assert probe.connect_ex((other, port)) != 0
    finally:
        process.terminate()
        process.wait(timeout=15)  # raises if the server did not stop


def test_page_urls_follow_the_navigation() -> None:
    assert page_urls("http://127.0.0.1:1") == [
        ("executions", "http://127.0.0.1:1/"),
        ("models", "http://127.0.0.1:1/models"),
        ("drift", "http://127.0.0.1:1/drift"),
        ("predictions", "http://127.0.0.1:1/predictions"),
    ]


@pytest.mark.e2e
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_screenshots_every_page(
    dashboard_state: DashboardState, tmp_path: Path
) -> None:
    out = tmp_path / "shots"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    result = subprocess.run(
        [
            sys.executable, "-m", "dashboard.screenshot",
            "--state-dir", str(dashboard_state.config.state_dir),
            "--out", str(out), "--settle", "0.5", "--timeout", "60",
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    for title in ("Pipeline executions", "Model versions", "Drift", "Predictions"):
        assert f"[{title}]" in result.stdout
    shots = sorted(p.name for p in out.glob("*.png"))
    assert shots == [
        "dashboard-drift.png",
        "dashboard-executions.png",
        "dashboard-models.png",
        "dashboard-predictions.png",
    ]
    for shot in out.glob("*.png"):
        header = shot.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(header[16:20], "big")
        height = int.from_bytes(header[20:24], "big")
        assert width == 1400 and height >= 1000
