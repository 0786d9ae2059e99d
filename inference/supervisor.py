"""The serving supervisor: holds the port, runs the workers, swaps models in place.

The supervisor binds the listening socket once and starts ``workers`` worker processes
(``inference.worker``) that inherit it. Because the socket belongs to the supervisor,
it stays open while workers come and go:

- **redeploy** (SIGHUP, with a new model named in the control file): a new generation
  of workers loads the new model and starts accepting from the same socket; only when
  every one of them is ready are the old workers sent SIGTERM, and they finish the
  requests they hold. The redeploy is reported done only once every old worker has
  stopped accepting: from then on every new connection reaches the new model. A model
  that fails to load leaves the old generation serving. The new workers run the
  interpreter and environment the control file names (the code the deployer serves
  now, e.g. a newly staged image), not necessarily the supervisor's own.
- **SIGTERM / SIGINT**: every worker drains its in-flight requests, then the supervisor
  exits 0 (SageMaker sends SIGKILL 30 s after SIGTERM).
- a worker that dies unexpectedly is replaced.

The outcome of every (re)load is written to the status file as JSON, so the process
that asked for it (``stack.endpoints.LocalEndpoints``) can tell when it took effect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("inference.supervisor")
_GRACE_SECONDS = 25  # below SageMaker's 30 s between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Generation:
    """What a set of workers serves."""

    model_dir: str
    variant_name: str = "AllTraffic"
    endpoint_name: str | None = None
    request: str = ""  # the caller's id for this (re)load, echoed in the status file
    # DataCaptureConfig of the endpoint config, and the local folder that stands for
    # its DestinationS3Uri (see inference.capture); None: no capture
    data_capture_config: dict[str, Any] | None = None
    data_capture_dir: str | None = None
    data_capture_flush_seconds: float = 1.0
    # The interpreter and environment of the workers (the code they run); None: the
    # supervisor's own
    worker_python: str | None = None
    worker_env: dict[str, str] | None = None
    # what the capture keeps (MB, hours); None: inference.capture's defaults
    data_capture_max_mb: float | None = None
    data_capture_retention_hours: float | None = None


@dataclass
class _Workers:
    spec: Generation
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # each worker's pipe (same order): "ready" once it accepts, "stopped" once it no
    # longer does, end of file when it exits
    pipes: list[Any] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        initial: Generation,
        control_file: Path | None = None,
        status_file: Path | None = None,
        startup_timeout: float = 120.0,
        read_timeout: float | None = None,
        small_batch_rows: int | None = None,
    ) -> None:
        self.host, self.port, self.workers = host, port, workers
        self.read_timeout = read_timeout  # the workers' default when None
        self.small_batch_rows = small_batch_rows  # the workers' default when None
        self.initial = initial
        self.control_file = control_file
        self.status_file = status_file
        self.startup_timeout = startup_timeout
        self._current: _Workers | None = None
        self._draining: list[subprocess.Popen[bytes]] = []
        self._signals: list[int] = []

    def run(self) -> int:
        try:
            sock = _listen(self.host, self.port)
        except OSError as exc:
            reason = f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            log.error("%s", reason)
            self._write_status(self._read_control() or self.initial, "failed", reason)
            return 1
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            spec = self._read_control() or self.initial
            started = self._start(sock, spec)
            if started is None:
                return 1
            self._current = started
            self._write_status(spec, "serving", None, started)
            log.info(
                "serving %s on %s:%s with %d workers",
                spec.model_dir,
                self.host,
                self.port,
                self.workers,
            )
            while True:
                with contextlib.suppress(InterruptedError):
                    select.select([wake_r], [], [], 0.5)
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(64)
                pending, self._signals = self._signals, []
                if signal.SIGTERM in pending or signal.SIGINT in pending:
                    self._stop_all()
                    return 0
                if signal.SIGHUP in pending:
                    self._reload(sock)
                self._reap_and_replace(sock)
        finally:
            signal.set_wakeup_fd(-1)
            sock.close()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _read_control(self) -> Generation | None:
        if self.control_file is None or not self.control_file.exists():
            return None
        data = json.loads(self.control_file.read_text())
        return Generation(
            model_dir=data["model_dir"],
            variant_name=data.get("variant_name", "AllTraffic"),
            endpoint_name=data.get("endpoint_name"),
            request=data.get("request", ""),
            data_capture_config=data.get("data_capture_config"),
            data_capture_dir=data.get("data_capture_dir"),
            data_capture_flush_seconds=data.get("data_capture_flush_seconds", 1.0),
            worker_python=data.get("worker_python"),
            worker_env=data.get("worker_env"),
            data_capture_max_mb=data.get("data_capture_max_mb"),
            data_capture_retention_hours=data.get("data_capture_retention_hours"),
        )

    def _start(self, sock: socket.socket, spec: Generation) -> _Workers | None:
        """Start a generation and wait until every worker accepts; None if any fails
        (the others are stopped and the failure is written to the status file).
        """
        workers = _Workers(spec)
        for _ in range(self.workers):
            process, ready = _spawn(
                sock, spec, self.read_timeout, self.small_batch_rows
            )
            workers.processes.append(process)
            workers.pipes.append(ready)
        error = _wait_ready(workers.pipes, self.startup_timeout)
        if error:
            log.error("cannot serve %s: %s", spec.model_dir, error)
            _stop(workers.processes, grace=5.0)
            _close(workers.pipes)
            self._write_status(spec, "failed", error)
            return None
        return workers

    def _reload(self, sock: socket.socket) -> None:
        spec = self._read_control()
        if spec is None or self._current is None:
            return
        log.info("loading %s beside the serving workers", spec.model_dir)
        started = self._start(sock, spec)
        if started is None:
            return  # the serving generation carries on
        old, self._current = self._current, started
        retiring = time.monotonic()
        _retire(old)
        self._draining.extend(old.processes)
        # Only now: the deployer takes this as "every new connection gets the new
        # model", which holds once no old worker accepts.
        self._write_status(spec, "serving", None, started)
        log.info(
            "now serving %s; the previous workers stopped accepting within %.2f s "
            "and are draining",
            spec.model_dir,
            time.monotonic() - retiring,
        )

    def _reap_and_replace(self, sock: socket.socket) -> None:
        self._draining = [p for p in self._draining if p.poll() is None]
        current = self._current
        if current is None:
            return
        replaced = False
        for i, process in enumerate(current.processes):
            if process.poll() is None:
                continue
            log.warning(
                "worker %d exited with %s; starting another",
                process.pid,
                process.returncode,
            )
            replacement, ready = _spawn(
                sock, current.spec, self.read_timeout, self.small_batch_rows
            )
            error = _wait_ready([ready], self.startup_timeout)
            if error:
                log.error("the replacement worker failed: %s", error)
            current.processes[i] = replacement
            _close(current.pipes[i : i + 1])
            current.pipes[i] = ready
            replaced = True
        if replaced:
            self._write_status(current.spec, "serving", None, current)

    def _stop_all(self) -> None:
        processes = list(self._draining)
        if self._current is not None:
            processes.extend(self._current.processes)
        log.info("stopping: draining %d workers", len(processes))
        _stop(processes, grace=_GRACE_SECONDS)

    def _write_status(
        self,
        spec: Generation,
        state: str,
        error: str | None,
        workers: _Workers | None = None,
    ) -> None:
        if self.status_file is None:
            return
        status: dict[str, Any] = {
            **asdict(spec),
            "state": state,
            "error": error,
            "supervisor_pid": os.getpid(),
            "worker_pids": [p.pid for p in workers.processes] if workers else [],
        }
        text = json.dumps(status, indent=2)
        if self.status_file.exists() and self.status_file.read_text() == text:
            return
        tmp = self.status_file.with_suffix(".partial")
        tmp.write_text(text)
        tmp.replace(self.status_file)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _spawn(
    sock: socket.socket,
    spec: Generation,
    read_timeout: float | None = None,
    small_batch_rows: int | None = None,
) -> tuple[subprocess.Popen[bytes], Any]:
    ready_r, ready_w = os.pipe()
    command = [
        spec.worker_python or sys.executable,
        "-m",
        "inference.worker",
        "--fd",
        str(sock.fileno()),
        "--ready-fd",
        str(ready_w),
        "--model-dir",
        spec.model_dir,
        "--variant-name",
        spec.variant_name,
        "--grace",
        str(_GRACE_SECONDS),
    ]
    if spec.endpoint_name:
        command += ["--endpoint-name", spec.endpoint_name]
    if read_timeout is not None:
        command += ["--read-timeout", str(read_timeout)]
    if small_batch_rows is not None:
        command += ["--small-batch-rows", str(small_batch_rows)]
    if spec.data_capture_config and spec.data_capture_dir:
        command += [
            "--data-capture-config",
            json.dumps(spec.data_capture_config),
            "--data-capture-dir",
            spec.data_capture_dir,
            "--data-capture-flush-seconds",
            str(spec.data_capture_flush_seconds),
        ]
        if spec.data_capture_max_mb is not None:
            command += ["--data-capture-max-mb", str(spec.data_capture_max_mb)]
        if spec.data_capture_retention_hours is not None:
            command += [
                "--data-capture-retention-hours",
                str(spec.data_capture_retention_hours),
            ]
    base = os.environ if spec.worker_env is None else spec.worker_env
    env = {**base, "OMP_NUM_THREADS": "1"}
    try:
        process = subprocess.Popen(
            command,
            pass_fds=(sock.fileno(), ready_w),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(ready_w)
    return process, os.fdopen(ready_r, "rb", buffering=0)


def _wait_ready(pipes: list[Any], timeout: float) -> str | None:
    """None once every worker has written ``ready``; else why not."""
    waiting = list(pipes)
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"{len(waiting)} worker(s) not ready within {timeout:.0f} s"
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(waiting, [], [], min(left, 0.5))
            for pipe in readable:
                if pipe.read(64).startswith(b"ready"):
                    waiting.remove(pipe)
                else:  # end of file: the worker exited before it was ready
                    return "a worker exited while loading the model (see its log)"
    return None


def _retire(old: _Workers, grace: float = _GRACE_SECONDS) -> None:
    """Send the old generation SIGTERM (each drains what it holds, then exits) and
    return once none of its workers accepts a connection any more: each says
    ``stopped`` or exits. A worker that has not stopped accepting within ``grace``
    seconds (its event loop is stuck) is killed.
    """
    for process in old.processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    waiting = list(old.pipes)
    deadline = time.monotonic() + grace
    while waiting and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(waiting, [], [], min(left, 0.5))
            for pipe in readable:
                said = pipe.read(64)
                if not said or b"stopped" in said:  # end of file: it exited
                    waiting.remove(pipe)
    for process, pipe in zip(old.processes, old.pipes, strict=True):
        if pipe in waiting:
            log.error(
                "worker %d still accepts %.0f s after SIGTERM; killing it",
                process.pid,
                grace,
            )
            process.kill()
    _close(old.pipes)


def _close(pipes: list[Any]) -> None:
    for pipe in pipes:
        pipe.close()


def _stop(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
