"""Serving benchmark: our server against the stacks a user would otherwise pick.

    .venv/bin/python -m benchmarks.serving            # full: 10 s per cell
    .venv/bin/python -m benchmarks.serving --quick    # seconds, for the smoke test

Same model (200 trees, depth 6, 20 features; 20 trees with --quick), same machine, same
bounded load generator on 127.0.0.1 (``wrk`` when installed, else a small asyncio
client; the table says which), fixed concurrency, keep-alive connections:

  ours      python -m inference.server, 2 workers
  flask     gunicorn + Flask, 2 sync workers, nginx in front (as SageMaker's framework
            containers run it; skipped if nginx is not installed)
  mlflow    mlflow models serve, 2 workers
  capture   ours with data capture on (every request and response, as SageMaker's
            DataCaptureConfig at 100 %), to measure what capture costs
  xgboost   ours with the small-batch fast path off (``--small-batch-rows 0``):
            XGBoost scores every batch, as before issue 22
  before    ours as of the git revision ``--before-rev`` (its ``inference`` and
            ``features`` packages, from ``git archive``): a change's "before" in
            the same run

Payloads of 1 and 1,000 rows as CSV and JSON (each server gets its own JSON shape: ours
and flask ``{"instances": ...}``, mlflow ``{"dataframe_split": ...}``), concurrency 1, 8
and 32. Reported per cell: requests/s, p50 and p99 latency, errors, and the server's
CPU per answered request (its whole process tree, from /proc: unlike requests/s, it
hardly moves with the machine's other load); per server: idle RSS of the whole
process tree. Ratios: ours over the better peer, ours over the
in-process ceiling (parse + predict + encode of the same body on one thread, times the
number of workers), capture on over capture off, and ours over xgboost.

Before the servers, the cut-over table: the scorer's two paths (Treelite GTIL and
XGBoost, ``inference.scorer``) on the same model, in-process on one thread, for
batches of 1 to 64 rows in alternating rounds; the cut-over is the largest batch up to
which GTIL is faster at every size. At the end, issue 22's goals for serving, met or
not, with the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from inference.artifact import CALIBRATION_FILE
from inference.calibration import PLATT, Calibration
from inference.capture import CaptureSettings, CaptureWriter
from inference.scorer import SMALL_BATCH_ROWS, TreeScorer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
N_FEATURES = 20


@dataclass(frozen=True)
class Payload:
    name: str  # e.g. "csv-1"
    rows: int
    media: str  # "csv" or "json"


@dataclass
class Cell:
    server: str
    payload: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    # CPU seconds of the server's whole process tree per answered request (us);
    # robust to a busy machine, where req/s and latencies are not
    cpu_us: float = float("nan")


# --------------------------------------------------------------------------- model


def build_model(folder: Path, trees: int) -> Path:
    """A depth-6 XGBoost model on 20 features, in our model folder format.

    With a calibration, as the pipeline's models have: ours serves calibrated
    probabilities and pays for them; the peers serve the booster's raw scores.
    """
    import xgboost as xgb

    from features import FeatureSchema

    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 0).astype(int)
    booster = xgb.train(
        {"max_depth": 6, "eta": 0.1, "objective": "binary:logistic", "nthread": 2},
        xgb.DMatrix(x, label=y),
        num_boost_round=trees,
    )
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(folder / "model.json")
    schema = FeatureSchema.from_dict(
        {
            "entity_id": "id",
            "label": "y",
            "features": [{"name": f"f{i:02d}"} for i in range(N_FEATURES)],
        }
    )
    (folder / "schema.json").write_text(json.dumps(schema.to_dict()))
    (folder / "metadata.json").write_text(json.dumps({"trees": trees}))
    calibration = Calibration(PLATT, 1.45, -1.96, "validation", len(x), int(y.sum()))
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()))
    return folder


def save_mlflow_model(model_dir: Path, target: Path) -> Path:
    import mlflow.xgboost
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    booster = xgb.Booster()
    booster.load_model(model_dir / "model.json")
    columns = [f"f{i:02d}" for i in range(N_FEATURES)]
    example = pd.DataFrame(np.zeros((2, N_FEATURES)), columns=columns)
    mlflow.xgboost.save_model(
        booster,
        target,
        signature=infer_signature(example, np.zeros(2)),
        model_format="json",
    )
    return target


def rows_for(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, N_FEATURES)).round(4)


def body_for(server: str, payload: Payload) -> tuple[bytes, str]:
    rows = rows_for(payload.rows)
    if payload.media == "csv":
        lines = "\n".join(",".join(f"{v:g}" for v in row) for row in rows) + "\n"
        if server == "mlflow":  # mlflow reads CSV through pandas, with a header
            header = ",".join(f"f{i:02d}" for i in range(N_FEATURES))
            lines = header + "\n" + lines
        return lines.encode(), "text/csv"
    if server == "mlflow":
        columns = [f"f{i:02d}" for i in range(N_FEATURES)]
        data = {"dataframe_split": {"columns": columns, "data": rows.tolist()}}
        return orjson.dumps(data), "application/json"
    return orjson.dumps({"instances": rows.tolist()}), "application/json"


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["OMP_NUM_THREADS"] = "1"  # one OpenMP thread per worker for every server
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    # mlflow starts ``uvicorn`` by name: the venv's scripts must be on PATH
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get("PATH", "")]
    )
    return env


CAPTURE_CONFIG = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://bench/datacapture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {
        "CsvContentTypes": ["text/csv"],
        "JsonContentTypes": ["application/json"],
    },
}


@contextlib.contextmanager
def ours(
    model_dir: Path,
    work: Path,
    capture: bool = False,
    small_batch_rows: int | None = None,
    code: Path | None = None,
) -> Iterator[tuple[str, list[int]]]:
    """Our server; ``code``: a folder holding another version of its packages."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "inference.server",
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
    ]
    if capture:
        command += [
            "--endpoint-name",
            "bench",
            "--data-capture-config",
            json.dumps(CAPTURE_CONFIG),
            "--data-capture-dir",
            str(work / "capture"),
        ]
    if small_batch_rows is not None:
        command += ["--small-batch-rows", str(small_batch_rows)]
    url = f"http://127.0.0.1:{port}"
    log_name = (
        "before.log"
        if code is not None
        else "capture.log"
        if capture
        else "xgboost.log"
        if small_batch_rows == 0
        else "ours.log"
    )
    env = None
    if code is not None:  # its packages first; the rest (none today) from ours
        env = {**_env(), "PYTHONPATH": os.pathsep.join([str(code), str(PROJECT_ROOT)])}
    with _process(command, work / log_name, env=env, url=url, cwd=code) as process:
        yield f"http://127.0.0.1:{port}", [process.pid]


@contextlib.contextmanager
def mlflow_serve(mlflow_dir: Path, work: Path) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        str(mlflow_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--workers",
        str(WORKERS),
        "--env-manager",
        "local",
    ]
    url = f"http://127.0.0.1:{port}"
    with _process(command, work / "mlflow.log", url=url) as process:
        yield f"http://127.0.0.1:{port}", [process.pid]


NGINX_CONF = """
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 2048; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  client_max_body_size 0;
  client_body_buffer_size 8m;
  upstream gunicorn {{ server unix:{work}/gunicorn.sock; }}
  server {{
    listen 127.0.0.1:{port} deferred;
    keepalive_timeout 3;
    location ~ ^/(ping|invocations) {{
      proxy_set_header Host $http_host;
      proxy_redirect off;
      proxy_pass http://gunicorn;
    }}
    location / {{ return 404 "{{}}"; }}
  }}
}}
"""


@contextlib.contextmanager
def flask_behind_nginx(model_dir: Path, work: Path) -> Iterator[tuple[str, list[int]]]:
    """gunicorn (2 sync workers) on a unix socket, nginx in front, as SageMaker's
    framework containers run it (their nginx.conf, access log off).
    """
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
    peer = work / "flask"
    peer.mkdir(exist_ok=True)
    os.chmod(peer, 0o777)  # nginx workers run as another user when started as root
    port = free_port()
    (peer / "nginx.conf").write_text(NGINX_CONF.format(work=peer, port=port))
    env = {**_env(), "BENCH_MODEL_DIR": str(model_dir)}
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"unix:{peer}/gunicorn.sock",
        "--timeout",
        "60",
        "benchmarks._serving_peer_flask:app",
    ]
    with (
        _process(gunicorn, work / "gunicorn.log", env=env) as g,
        _process(
            [nginx, "-c", str(peer / "nginx.conf"), "-p", str(peer)],
            work / "nginx.log",
            url=f"http://127.0.0.1:{port}",
        ) as n,
    ):
        yield f"http://127.0.0.1:{port}", [g.pid, n.pid]


@contextlib.contextmanager
def _process(
    command: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    url: str | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group; wait for ``url``/ping if given."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd or PROJECT_ROOT,
            env=env or _env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if url:
            _wait_for_ping(url, process, log_path)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_ping(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}; see {log}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}/ping did not answer within 120 s; see {log}")


def checkout(revision: str, target: Path) -> Path:
    """The serving code (``inference``, ``features``) as of ``revision``."""
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", revision, "inference", "features"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _process_tree(pids: list[int]) -> Iterator[Any]:
    """The processes ``pids`` and all their children (psutil.Process); one that has
    ended is left out (a caller reading one that ends meanwhile skips it too).
    """
    import psutil

    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            yield from [parent, *parent.children(recursive=True)]


def tree_cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds of the processes and all their children."""
    import psutil

    total = 0.0
    for process in _process_tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def tree_rss_mb(pids: list[int]) -> float:
    import psutil

    total = 0
    for process in _process_tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


# --------------------------------------------------------------------------- load


def run_wrk(
    url: str, body: bytes, media: str, concurrency: int, seconds: float, work: Path
) -> tuple[float, float, float, int, int]:
    body_file = work / "body.bin"
    body_file.write_bytes(body)
    script = work / "post.lua"
    script.write_text(
        "local f = io.open(" + json.dumps(str(body_file)) + ', "rb")\n'
        "wrk.method = 'POST'\n"
        "wrk.body = f:read('*a')\n"
        "f:close()\n"
        f"wrk.headers['Content-Type'] = '{media}'\n"
        "wrk.headers['Accept'] = 'application/json'\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",  # wrk counts whole seconds
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"{url}/invocations",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return _parse_wrk(out)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse_wrk(out: str) -> tuple[float, float, float, int, int]:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in m.groups())
    return rps, latency("50"), latency("99"), errors, total


async def _asyncio_load(
    host: str, port: int, request: bytes, concurrency: int, seconds: float
) -> tuple[float, float, float, int, int]:
    """Fallback load generator: ``concurrency`` keep-alive connections, each sending
    the next request when the last answer is in.
    """
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def one_connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(
                    re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)  # type: ignore[union-attr]
                )
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1e3
    return (
        len(latencies) / elapsed,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        errors,
        len(latencies),
    )


def run_asyncio(
    url: str, body: bytes, media: str, concurrency: int, seconds: float
) -> tuple[float, float, float, int, int]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return asyncio.run(_asyncio_load(host, int(port), request, concurrency, seconds))


# --------------------------------------------------------------------------- in-process


def in_process_per_second(
    model_dir: Path, payload: Payload, seconds: float
) -> tuple[float, float]:
    """Requests/s of parse + predict + encode of the same body on one thread, and
    the CPU microseconds each took (``time.process_time``: what the machine's other
    load moves least).
    """
    from inference.codec import encode_response, parse_request
    from inference.model import load_model

    model = load_model(model_dir, threads=1)
    body, media = body_for("ours", payload)
    count, began, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - began < seconds:
        parsed = parse_request(body, media, model.schema)
        encode_response(model.predict(parsed.matrix), "application/json", None)
        count += 1
    rate = count / (time.perf_counter() - began)
    return rate, (time.process_time() - cpu) / count * 1e6


def profile_ours(model_dir: Path, payload: Payload, repeat: int) -> dict[str, float]:
    """Where one request's time goes inside our worker (microseconds per request).

    ``request_us`` is the worker's whole path for one request short of the socket:
    the raw HTTP request fed to its HTTP layer (``inference.worker.HttpServer``),
    parsed, scored, encoded and its answer built, onto a transport that drops it.
    The difference to the server's CPU per request over HTTP (printed per cell) is
    the kernel's TCP and the event loop.
    """
    from inference.app import ScoringApp
    from inference.codec import encode_response, parse_request
    from inference.model import load_model
    from inference.worker import HttpServer

    model = load_model(model_dir, threads=1)
    body, media = body_for("ours", payload)
    parsed = parse_request(body, media, model.schema)
    scores = model.predict(parsed.matrix)
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: bench\r\nContent-Type: {media}\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def per_call(fn: Any) -> float:
        began = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - began) / repeat * 1e6

    def connection(app: ScoringApp) -> Any:
        answered: list[int] = []
        conn = HttpServer(app)()
        conn.connection_made(_DroppingTransport(answered))
        return conn, answered

    # The worker without and with capture, in alternating rounds (medians: the
    # machine may be busy). With capture, the writer's work (encoding and appending
    # the lines, done by a thread in the server) runs inline after each round, so
    # the difference is the whole CPU cost of capturing every request.
    rounds = 5
    per_round = max(repeat // rounds, 1)
    off_us: list[float] = []
    on_us: list[float] = []
    write_us: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        settings = CaptureSettings.from_config(
            CAPTURE_CONFIG, Path(folder), "bench", "AllTraffic"
        )
        assert settings is not None
        writer = CaptureWriter(settings, flush_bytes=1 << 62)  # flushed below only
        plain, plain_answers = connection(ScoringApp(model))
        capturing, capture_answers = connection(ScoringApp(model, capture=writer))
        for _ in range(rounds):
            began = time.perf_counter()
            for _ in range(per_round):
                plain.data_received(request)
            off_us.append((time.perf_counter() - began) / per_round * 1e6)
            began = time.perf_counter()
            for _ in range(per_round):
                capturing.data_received(request)
            queued = time.perf_counter()
            written = writer.flush()
            done = time.perf_counter()
            on_us.append((done - began) / per_round * 1e6)
            write_us.append((done - queued) / max(written, 1) * 1e6)
        writer.close()
    if set(plain_answers + capture_answers) != {200}:
        raise RuntimeError(
            f"the profiled requests were not all answered 200: {body[:80]!r}"
        )
    request_us, capture_us = float(np.median(off_us)), float(np.median(on_us))
    return {
        "parse_us": per_call(lambda: parse_request(body, media, model.schema)),
        "predict_us": per_call(lambda: model.predict(parsed.matrix)),
        "encode_us": per_call(
            lambda: encode_response(scores, "application/json", None)
        ),
        "request_us": request_us,
        "request_capture_us": capture_us,
        "capture_write_us": float(np.median(write_us)),
        "capture_cpu_ratio": capture_us / request_us,
    }


class _DroppingTransport(asyncio.Transport):
    """Stands for a socket in ``profile_ours``: keeps each answer's status only."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__()
        self._statuses = statuses

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._statuses.append(int(bytes(data[9:12])))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise RuntimeError("the worker closed a connection while profiled")


CUT_OVER_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64)


def measure_cut_over(model_dir: Path, rounds: int) -> dict[str, Any]:
    """The scorer's two paths on the same rows, in-process on one thread.

    For each batch size, ``rounds`` alternating rounds (GTIL then XGBoost, then the
    other way round), each timing a fixed number of calls of one path; the median
    microseconds per call of each. The cut-over is the largest size up to which GTIL
    is faster at every measured size.
    """
    from inference.model import load_model

    booster = load_model(model_dir, threads=1).booster
    gtil = TreeScorer(booster, small_batch_rows=max(CUT_OVER_SIZES))
    if not gtil.fast_path_status().active:
        raise RuntimeError(f"no fast path: {gtil.fast_path_status().detail}")
    xgboost = TreeScorer(booster, small_batch_rows=0)
    rng = np.random.default_rng(11)
    sizes: list[dict[str, Any]] = []
    for rows in CUT_OVER_SIZES:
        matrix = rng.normal(size=(rows, booster.num_features())).astype(np.float32)
        calls = max(4, 240 // rows)
        timings: dict[str, list[float]] = {"gtil": [], "xgboost": []}
        for i in range(rounds):
            pair = [("gtil", gtil), ("xgboost", xgboost)]
            for name, scorer in pair if i % 2 == 0 else pair[::-1]:
                scorer.predict(matrix)  # warm
                began = time.perf_counter()
                for _ in range(calls):
                    scorer.predict(matrix)
                timings[name].append((time.perf_counter() - began) / calls * 1e6)
        g, x = float(np.median(timings["gtil"])), float(np.median(timings["xgboost"]))
        sizes.append({"rows": rows, "gtil_us": round(g, 1), "xgboost_us": round(x, 1)})
    cut = 0
    for row in sizes:
        if row["gtil_us"] >= row["xgboost_us"]:
            break
        cut = row["rows"]
    return {"sizes": sizes, "cut_over": cut, "configured": SMALL_BATCH_ROWS}


def _print_cut_over(cut_over: dict[str, Any]) -> None:
    print("cut-over (in-process, one thread, median us per call):")
    print(f"{'rows':>5} {'GTIL':>9} {'XGBoost':>9} {'GTIL/XGB':>9}")
    for row in cut_over["sizes"]:
        print(
            f"{row['rows']:>5} {row['gtil_us']:9.1f} {row['xgboost_us']:9.1f} "
            f"{row['gtil_us'] / row['xgboost_us']:9.2f}"
        )
    print(
        f"GTIL is faster up to {cut_over['cut_over']} rows in this run; the scorer's "
        f"SMALL_BATCH_ROWS is {cut_over['configured']}",
        flush=True,
    )


def _print_against(cells: list[Cell], other: str, title: str) -> None:
    """Ours against a variant of ours, cell by cell (same run, alternating)."""
    by = {(c.server, c.payload, c.concurrency): c for c in cells}
    pairs = [
        (by[("ours", *key[1:])], by[key])
        for key in sorted(by)
        if key[0] == other and ("ours", *key[1:]) in by
    ]
    if not pairs:
        return
    print()
    print(title)
    short = other[:6]
    header = (
        f"{'payload':9} {'c':>3} | {'ours req/s':>10} {short + ' req/s':>12} "
        f"{'ratio':>6} | {'ours p99':>8} {short + ' p99':>10} | "
        f"{'ours CPU us':>11} {short + ' CPU us':>13}"
    )
    print(header)
    print("-" * len(header))
    for mine, then in pairs:
        print(
            f"{mine.payload:9} {mine.concurrency:>3} | {mine.requests_per_s:10.0f} "
            f"{then.requests_per_s:12.0f} "
            f"{mine.requests_per_s / then.requests_per_s:6.2f} | "
            f"{mine.p99_ms:8.2f} {then.p99_ms:10.2f} | "
            f"{mine.cpu_us:11.1f} {then.cpu_us:13.1f}"
        )


def small_batch_goals(
    cells: list[Cell],
    ceiling: dict[str, float],
    ceiling_cpu_us: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Issue 22's serving goals against this run's cells (c=8 where measured)."""
    by = {(c.server, c.payload, c.concurrency): c for c in cells}
    goals: list[dict[str, Any]] = []
    for payload in sorted({c.payload for c in cells}):
        mine = by.get(("ours", payload, 8))
        if mine is None:
            continue
        rows = int(payload.split("-")[1])
        flask = by.get(("flask", payload, 8))
        # "today": the server before the change under test when the run has it,
        # else ours with XGBoost scoring every batch (before issue 22's fast path)
        today = by.get(("before", payload, 8)) or by.get(("xgboost", payload, 8))
        today_name = "before" if by.get(("before", payload, 8)) else "XGBoost only"
        if rows == 1:
            goals.append(
                {
                    "goal": f"{payload} c=8 >= 8000 req/s, p99 < 3 ms",
                    "value": f"{mine.requests_per_s:.0f} req/s, p99 {mine.p99_ms:.2f}",
                    "met": mine.requests_per_s >= 8000 and mine.p99_ms < 3,
                }
            )
            if flask is not None:
                ratio = mine.requests_per_s / flask.requests_per_s
                goals.append(
                    {
                        "goal": f"{payload} c=8 >= 3.5x the Flask peer",
                        "value": f"{ratio:.2f}x",
                        "met": ratio >= 3.5,
                    }
                )
        else:
            share = mine.requests_per_s / ceiling[payload]
            value = f"{share:.0%}"
            if ceiling_cpu_us and payload in ceiling_cpu_us:
                # the same ratio by CPU, which the machine's other load moves least:
                # in-process CPU per request over the server's CPU per request
                # (all its processes, over HTTP)
                by_cpu = ceiling_cpu_us[payload] / mine.cpu_us
                value += f" (by CPU per request: {by_cpu:.0%})"
            goals.append(
                {
                    "goal": f"{payload} c=8 >= 90 % of the in-process ceiling",
                    "value": value,
                    "met": share >= 0.9,
                }
            )
        if today is not None:
            ratio = mine.requests_per_s / today.requests_per_s
            goals.append(
                {
                    "goal": f"{payload} c=8 not slower than today ({today_name})",
                    "value": f"{ratio:.2f}x",
                    "met": ratio >= 1.0,
                }
            )
    return goals


def _print_goals(
    goals: list[dict[str, Any]], load_at_start: float, load_at_end: float
) -> None:
    print()
    print(
        f"issue 22 goals (load average {load_at_start:.2f} at start, "
        f"{load_at_end:.2f} at end, {os.cpu_count()} CPUs):"
    )
    for goal in goals:
        verdict = "met" if goal["met"] else "NOT met"
        print(f"  {goal['goal']}: {goal['value']} -> {verdict}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving")
    parser.add_argument("--quick", action="store_true", help="small and short")
    parser.add_argument("--seconds", type=float, default=None, help="per cell")
    parser.add_argument("--servers", default="ours,capture,flask,mlflow")
    parser.add_argument("--concurrency", default=None, help="e.g. 1,8,32")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument(
        "--before-rev",
        default="HEAD",
        help="the git revision the 'before' server runs (default HEAD)",
    )
    args = parser.parse_args(argv)

    seconds = args.seconds or (1.0 if args.quick else 10.0)
    concurrencies = [
        int(c)
        for c in (args.concurrency or ("1,8" if args.quick else "1,8,32")).split(",")
    ]
    payloads = [
        Payload("csv-1", 1, "csv"),
        Payload("json-1", 1, "json"),
        Payload(f"csv-{10 if args.quick else 1000}", 10 if args.quick else 1000, "csv"),
        Payload(
            f"json-{10 if args.quick else 1000}", 10 if args.quick else 1000, "json"
        ),
    ]
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "asyncio"
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.chmod(work, 0o755)
    try:
        return _run(args, work, seconds, concurrencies, payloads, loadgen, servers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    work: Path,
    seconds: float,
    concurrencies: list[int],
    payloads: list[Payload],
    loadgen: str,
    servers: list[str],
) -> int:
    trees = 20 if args.quick else 200
    model_dir = build_model(work / "model", trees)
    load_at_start = os.getloadavg()[0]
    print(
        f"model: {trees} trees, depth 6, {N_FEATURES} features; {WORKERS} workers per "
        f"server; load generator: {loadgen}; {seconds:.0f} s per cell; "
        f"{os.cpu_count()} CPUs, load average {load_at_start:.2f} at start",
        flush=True,
    )
    cut_over = measure_cut_over(model_dir, rounds=3 if args.quick else 9)
    _print_cut_over(cut_over)
    starters = {
        "ours": lambda: ours(model_dir, work),
        "capture": lambda: ours(model_dir, work, capture=True),
        "xgboost": lambda: ours(model_dir, work, small_batch_rows=0),
        "before": lambda: ours(
            model_dir, work, code=checkout(args.before_rev, work / "before-code")
        ),
        "flask": lambda: flask_behind_nginx(model_dir, work),
        "mlflow": lambda: mlflow_serve(
            save_mlflow_model(model_dir, work / "mlflow-model"), work
        ),
    }
    cells: list[Cell] = []
    idle_rss: dict[str, float] = {}
    skipped: dict[str, str] = {}
    # ours and its variants (capture, xgboost) are measured side by side: all run,
    # and each cell alternates between them in slices (ours, capture, capture, ours),
    # so a change in the machine's background load falls on each alike
    variants = [
        s
        for s in ("capture", "xgboost", "before")
        if s in servers and "ours" in servers
    ]
    groups: list[list[str]] = []
    for server in servers:
        if server in variants:
            continue
        groups.append([server, *variants] if server == "ours" else [server])
    for group in groups:
        with contextlib.ExitStack() as stack:
            urls: dict[str, str] = {}
            server_pids: dict[str, list[int]] = {}
            for server in group:
                try:
                    url, pids = stack.enter_context(starters[server]())
                except (FileNotFoundError, RuntimeError) as exc:
                    skipped[server] = str(exc)
                    print(f"{server}: skipped ({exc})", flush=True)
                    continue
                urls[server] = url
                server_pids[server] = pids
                time.sleep(0.5)
                idle_rss[server] = tree_rss_mb(pids)
            order = list(urls) + list(reversed(urls)) if len(urls) > 1 else list(urls)
            for payload in payloads:
                for concurrency in concurrencies:
                    slices: dict[
                        str, list[tuple[float, float, float, float, int, int, float]]
                    ] = {server: [] for server in urls}
                    for server in order:
                        body, media = body_for(server, payload)
                        share = seconds * len(urls) / len(order)
                        cpu_before = tree_cpu_s(server_pids[server])
                        if loadgen == "wrk":
                            result = run_wrk(
                                urls[server], body, media, concurrency, share, work
                            )
                        else:
                            result = run_asyncio(
                                urls[server], body, media, concurrency, share
                            )
                        cpu = tree_cpu_s(server_pids[server]) - cpu_before
                        slices[server].append((share, *result, cpu))
                    for server, parts in slices.items():
                        cell = _cell(server, payload.name, concurrency, parts)
                        cells.append(cell)
                        print(
                            f"  {server:7} {payload.name:9} c={concurrency:<3} "
                            f"{cell.requests_per_s:9.1f} req/s  p50 {cell.p50_ms:7.2f}"
                            f" ms  p99 {cell.p99_ms:7.2f} ms  errors {cell.errors}"
                            f"  server CPU {cell.cpu_us:7.1f} us/request",
                            flush=True,
                        )

    measured = {
        p.name: in_process_per_second(model_dir, p, min(seconds, 2.0)) for p in payloads
    }
    ceiling = {name: WORKERS * rate for name, (rate, _) in measured.items()}
    ceiling_cpu_us = {name: cpu for name, (_, cpu) in measured.items()}
    profile = {
        p.name: profile_ours(model_dir, p, 200 if p.rows > 1 else 2000)
        for p in payloads
    }
    captured = _captured(work / "capture") if "capture" in servers else None
    _print_tables(cells, idle_rss, ceiling, profile, skipped)
    _print_capture(cells, captured, profile)
    _print_against(
        cells,
        "xgboost",
        "ours (fast path for small batches) vs xgboost (XGBoost only, as before):",
    )
    _print_against(
        cells, "before", f"ours vs before (the server as of {args.before_rev}):"
    )
    goals = small_batch_goals(cells, ceiling, ceiling_cpu_us)
    _print_goals(goals, load_at_start, os.getloadavg()[0])
    if args.json:
        _write_json(
            args.json,
            cells,
            idle_rss,
            ceiling,
            profile,
            loadgen,
            captured,
            [{"case": f"cut-over/{row['rows']}", **row} for row in cut_over["sizes"]]
            + [{"case": "cut-over", "rows": cut_over["cut_over"]}]
            + [
                {"case": f"in-process-cpu/{k}", "cpu_us_per_request": round(v, 1)}
                for k, v in ceiling_cpu_us.items()
            ]
            + [{"case": f"goal/{g['goal']}", **g} for g in goals]
            + [
                {
                    "case": "load-average",
                    "start": round(load_at_start, 2),
                    "end": round(os.getloadavg()[0], 2),
                }
            ],
        )
    ours_like = ("ours", "capture", "xgboost", "before")
    return 1 if any(c.errors for c in cells if c.server in ours_like) else 0


def _cell(
    server: str,
    payload: str,
    concurrency: int,
    parts: list[tuple[float, float, float, float, int, int, float]],
) -> Cell:
    """One cell from its slices ``(seconds, req/s, p50, p99, errors, requests,
    server CPU seconds)``: throughput over all of them, latencies averaged, errors,
    requests and CPU summed.
    """
    seconds = sum(p[0] for p in parts)
    requests = sum(p[5] for p in parts)
    return Cell(
        server,
        payload,
        concurrency,
        sum(p[0] * p[1] for p in parts) / seconds,
        sum(p[2] for p in parts) / len(parts),
        sum(p[3] for p in parts) / len(parts),
        sum(p[4] for p in parts),
        requests,
        sum(p[6] for p in parts) / requests * 1e6 if requests else float("nan"),
    )


def _captured(folder: Path) -> dict[str, float]:
    """What the capture run wrote: events (lines), files and megabytes."""
    files = list(folder.rglob("*.jsonl"))
    events = 0
    for path in files:
        with path.open("rb") as handle:
            events += sum(1 for _ in handle)
    size = sum(p.stat().st_size for p in files)
    return {"events": events, "files": len(files), "mb": size / 2**20}


def _print_capture(
    cells: list[Cell],
    captured: dict[str, float] | None,
    profile: dict[str, dict[str, float]],
) -> None:
    print()
    print("in-process CPU per request, capture off -> on (writer's work included):")
    for name, parts in profile.items():
        print(
            f"  {name}: {parts['request_us']:.1f} -> "
            f"{parts['request_capture_us']:.1f} us "
            f"(x{parts['capture_cpu_ratio']:.3f}; "
            f"writing {parts['capture_write_us']:.1f} us per event)"
        )
    by = {(c.server, c.payload, c.concurrency): c for c in cells}
    pairs = [
        (key, by[("ours", *key[1:])])
        for key in sorted(by)
        if key[0] == "capture" and ("ours", *key[1:]) in by
    ]
    if not pairs:
        return
    print()
    header = (
        f"{'payload':9} {'c':>3} | {'off req/s':>9} {'on req/s':>9} "
        f"{'on/off':>6} | {'off p99':>7} {'on p99':>7}"
    )
    print("data capture (100 % of requests and responses) on vs off:")
    print(header)
    print("-" * len(header))
    for key, off in pairs:
        on = by[key]
        print(
            f"{key[1]:9} {key[2]:>3} | {off.requests_per_s:9.0f} "
            f"{on.requests_per_s:9.0f} {on.requests_per_s / off.requests_per_s:6.2f}"
            f" | {off.p99_ms:7.2f} {on.p99_ms:7.2f}"
        )
    if captured is not None:
        answered = sum(c.requests for c in cells if c.server == "capture")
        print(
            f"captured {captured['events']:,.0f} events in {captured['files']:.0f} "
            f"files ({captured['mb']:.1f} MB); the load generator counted "
            f"{answered:,} answers (wrk leaves out those in flight as a slice ends)"
        )


def _print_tables(
    cells: list[Cell],
    idle_rss: dict[str, float],
    ceiling: dict[str, float],
    profile: dict[str, dict[str, float]],
    skipped: dict[str, str],
) -> None:
    by = {(c.server, c.payload, c.concurrency): c for c in cells}
    print()
    header = (
        f"{'payload':9} {'c':>3} | {'ours req/s':>10} {'p50':>6} {'p99':>7} | "
        f"{'flask req/s':>11} {'p99':>7} | {'mlflow req/s':>12} {'p99':>7} | "
        f"{'ours/best peer':>14} | {'ours/in-process':>15}"
    )
    print(header)
    print("-" * len(header))
    for payload, concurrency in sorted(
        {(c.payload, c.concurrency) for c in cells}, key=lambda k: (k[0], k[1])
    ):
        mine = by.get(("ours", payload, concurrency))
        flask = by.get(("flask", payload, concurrency))
        mlflow = by.get(("mlflow", payload, concurrency))
        peers = [c.requests_per_s for c in (flask, mlflow) if c]
        best = max(peers) if peers else None

        def col(c: Cell | None, width: int) -> str:
            return (
                f"{c.requests_per_s:{width}.0f} {c.p99_ms:7.2f}"
                if c
                else " " * (width + 8)
            )

        ratio = f"{mine.requests_per_s / best:14.2f}" if mine and best else " " * 14
        share = (
            f"{mine.requests_per_s / ceiling[payload]:15.0%}"
            if mine and payload in ceiling
            else " " * 15
        )
        ours_cols = (
            f"{mine.requests_per_s:10.0f} {mine.p50_ms:6.2f} {mine.p99_ms:7.2f}"
            if mine
            else " " * 25
        )
        print(
            f"{payload:9} {concurrency:>3} | {ours_cols} | {col(flask, 11)} | "
            f"{col(mlflow, 12)} | {ratio} | {share}"
        )
    print()
    print(
        "idle RSS of the whole process tree (MB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in idle_rss.items())
    )
    print(
        "in-process ceiling (parse + predict + encode, one thread x "
        f"{WORKERS} workers, req/s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items())
    )
    print(
        "where a request's time goes inside our worker, in-process on one thread "
        "(us per request; request_us: raw HTTP in, answer out, no socket):"
    )
    for name, parts in profile.items():
        print("  " + name + ": " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    for server, reason in skipped.items():
        print(f"{server}: not measured ({reason})")


def _write_json(
    path: Path,
    cells: list[Cell],
    idle_rss: dict[str, float],
    ceiling: dict[str, float],
    profile: dict[str, dict[str, float]],
    loadgen: str,
    captured: dict[str, float] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> None:
    off = {(c.payload, c.concurrency): c for c in cells if c.server == "ours"}
    results: list[dict[str, Any]] = [
        {
            "case": f"{c.server}/{c.payload}/c{c.concurrency}",
            "requests_per_s": round(c.requests_per_s, 1),
            "p50_ms": round(c.p50_ms, 3),
            "p99_ms": round(c.p99_ms, 3),
            "errors": c.errors,
            "server_cpu_us_per_request": round(c.cpu_us, 1),
            "ratio_to_in_process": round(c.requests_per_s / ceiling[c.payload], 3)
            if c.server in ("ours", "capture", "xgboost", "before")
            else None,
            **(
                {
                    "ratio_to_no_capture": round(
                        c.requests_per_s
                        / off[(c.payload, c.concurrency)].requests_per_s,
                        3,
                    )
                }
                if c.server == "capture" and (c.payload, c.concurrency) in off
                else {}
            ),
        }
        for c in cells
    ]
    if captured is not None:
        results.append({"case": "capture/written", **captured})
    results += [
        {"case": f"{k}/idle", "idle_rss_mb": round(v, 1)} for k, v in idle_rss.items()
    ]
    results += [
        {"case": f"in-process/{k}", "requests_per_s": round(v, 1)}
        for k, v in ceiling.items()
    ]
    results += [
        {"case": f"profile/{k}", **{n: round(x, 1) for n, x in v.items()}}
        for k, v in profile.items()
    ]
    results += extra or []
    path.write_text(
        json.dumps(
            {"benchmark": "serving", "loadgen": loadgen, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    sys.exit(main())
