"""``python -m dashboard.screenshot``: serve the dashboard and screenshot every page.

Starts ``python -m dashboard`` on a free port (the same command a user runs), waits for
its health check, then drives headless Chromium through the DevTools protocol: each
page is opened, Streamlit's script run is awaited (the app's
``data-test-script-state`` turns ``notRunning``) and charts get a moment to draw,
then the page is saved as a PNG as tall as its content. Chromium's
``--screenshot --virtual-time-budget`` alone is not enough: virtual time does not wait
for the server's answers over the websocket, so it captures half-drawn pages.

A tool for the docs and the issue's evidence, not a test: it needs a Chromium binary.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dashboard.app import PAGES
from pipelines.arguments import ENV_OPTION, STATE_DIR_OPTION, add_options

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]
DONE = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.dataset.testScriptState === 'notRunning'
    && app.dataset.testConnectionState === 'CONNECTED'
    && !!document.querySelector(
      '[data-testid="stMain"] h1, [data-testid="stException"]');
})()"""
TITLE = """document.querySelector('[data-testid="stMain"] h1').innerText"""
FAILED = """document.querySelectorAll('[data-testid="stException"]').length"""
HEIGHT = """Math.max(document.querySelector('[data-testid="stMain"]').scrollHeight,
  document.body.scrollHeight)"""


class ScreenshotError(Exception):
    """The dashboard or the browser did not come up, or a page never finished."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def page_urls(base: str) -> list[tuple[str, str]]:
    """``(name, url)`` of every page: the first at ``/``, the others at their file
    name.
    """
    urls = []
    for index, (file_name, _, _) in enumerate(PAGES):
        name = Path(file_name).stem
        urls.append((name, base + "/" if index == 0 else f"{base}/{name}"))
    return urls


@contextmanager
def serve(
    env: str | None, state_dir: str | None, port: int, timeout: float
) -> Iterator[str]:
    command = [sys.executable, "-m", "dashboard", "--port", str(port)]
    if env:
        command += ["--env", env]
    if state_dir:
        command += ["--state-dir", state_dir]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: _http_ok(f"{base}/_stcore/health"),
            timeout,
            "the dashboard's health check",
            process,
        )
        yield base
    finally:
        _stop(process)


@contextmanager
def chromium(executable: str, width: int, height: int, timeout: float) -> Iterator[Any]:
    """A headless Chromium and a DevTools connection to its first tab."""
    from websockets.sync.client import connect

    profile = Path(tempfile.mkdtemp(prefix="dashboard-chromium-"))
    process = subprocess.Popen(
        [
            executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        _wait(port_file.exists, timeout, "Chromium's DevTools port", process)
        port = port_file.read_text().split()[0]
        targets = json.loads(_http_get(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as socket_:
            yield _DevTools(socket_)
    finally:
        _stop(process)
        shutil.rmtree(profile, ignore_errors=True)


class _DevTools:
    def __init__(self, socket_: Any) -> None:
        self._socket = socket_
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self._socket.send(
            json.dumps({"id": self._next_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression)
        return result.get("result", {}).get("value")


def screenshot_page(
    tools: _DevTools,
    url: str,
    path: Path,
    width: int,
    height: int,
    timeout: float,
    settle: float,
) -> str:
    """Save ``url`` as a PNG at ``path``; its title, or ScreenshotError if the page
    shows an exception.
    """
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    tools.call("Page.navigate", url=url)
    time.sleep(0.5)  # let the old page go before asking whether the new one is done
    _wait(lambda: bool(tools.evaluate(DONE)), timeout, f"the page {url}")
    time.sleep(settle)  # charts draw after the script run ends
    if tools.evaluate(FAILED):
        raise ScreenshotError(f"the page {url} shows an exception")
    content = int(tools.evaluate(HEIGHT) or height)
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=max(height, min(content + 80, 6000)),
        deviceScaleFactor=1,
        mobile=False,
    )
    time.sleep(settle)
    shot = tools.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return str(tools.evaluate(TITLE))  # every page has a title


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard.screenshot",
        description="Serve the dashboard and save a PNG of every page.",
    )
    add_options(parser, ENV_OPTION, STATE_DIR_OPTION)
    parser.add_argument("--out", default="screenshots", help="folder for the PNGs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per page, s")
    parser.add_argument("--settle", type=float, default=1.5, help="chart drawing, s")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"error: no Chromium at {args.chromium} (--chromium)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with (
            serve(args.env, args.state_dir, free_port(), args.timeout) as base,
            chromium(args.chromium, args.width, args.height, args.timeout) as tools,
        ):
            for name, url in page_urls(base):
                path = out / f"dashboard-{name}.png"
                title = screenshot_page(
                    tools, url, path, args.width, args.height, args.timeout, args.settle
                )
                print(f"{url} [{title}] -> {path}")
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _wait(
    ready: Any, timeout: float, what: str, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            detail = process.stderr.read()[-2000:] if process.stderr else ""
            raise ScreenshotError(
                f"{what}: the process exited with code {process.returncode} {detail}"
            )
        if ready():
            return
        time.sleep(0.25)
    raise ScreenshotError(f"{what}: not ready within {timeout:.0f}s")


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local)
        return str(response.read().decode())


def _http_ok(url: str) -> bool:
    try:
        return _http_get(url).strip() == "ok"
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
