"""One serving worker: load the model once, then serve the supervisor's socket.

Started by ``inference.supervisor`` as ``python -m inference.worker --fd N --ready-fd M
--model-dir DIR``. The listening socket is inherited from the supervisor, so every
worker (and the next generation of workers during a redeploy) accepts from one queue:
no connection waits in a socket that is about to close. The worker writes ``ready`` to
``--ready-fd`` once it accepts connections and exits non-zero if the model cannot load.
SIGTERM stops accepting and then writes ``stopped`` to ``--ready-fd`` (so the supervisor
knows that no connection opened from then on reaches this worker), answers further
requests on open connections with ``Connection: close`` for up to 2 s, lets in-flight
requests finish (up to ``--grace`` seconds) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference.capture import CaptureWriter
    from inference.model import LoadedModel

# Measured: XGBoost's default OpenMP threading in each of several workers oversubscribes
# a small host 10-30x; set before the OpenMP runtime loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# How long open connections get to send one more request (answered with "Connection:
# close") before the rest are closed; well under SageMaker's 30 s.
_DRAIN_SECONDS = 2.0
# How long a client has to deliver a whole request (headers and body) once it has
# connected or had its previous answer: a slow or stalled client is disconnected then.
# uvicorn (0.54) times out only idle keep-alive connections, and only after an answer.
_READ_TIMEOUT = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inference.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--variant-name", default="AllTraffic")
    parser.add_argument("--grace", type=int, default=25)
    parser.add_argument("--read-timeout", type=float, default=_READ_TIMEOUT)
    parser.add_argument(
        "--small-batch-rows",
        type=int,
        default=None,
        help="batches of at most this many rows take the fast path (0: off)",
    )
    parser.add_argument(
        "--data-capture-config", default=None, help="DataCaptureConfig as JSON"
    )
    parser.add_argument(
        "--data-capture-dir", default=None, help="the folder of DestinationS3Uri"
    )
    parser.add_argument("--data-capture-flush-seconds", type=float, default=1.0)
    parser.add_argument(
        "--data-capture-max-mb", type=float, default=None, help="capture size bound"
    )
    parser.add_argument(
        "--data-capture-retention-hours",
        type=float,
        default=None,
        help="capture age bound",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from inference.app import ScoringApp
    from inference.model import ModelLoadError, load_model
    from inference.scorer import SMALL_BATCH_ROWS

    _no_signal_cancels_parsing()
    small_batch_rows = (
        SMALL_BATCH_ROWS if args.small_batch_rows is None else args.small_batch_rows
    )
    try:
        model = load_model(Path(args.model_dir), 1, small_batch_rows)
        _score_one_row(model)  # proves it answers before it reports ready
    except ModelLoadError as exc:
        print(f"worker {os.getpid()}: {exc}", file=sys.stderr)
        return 3
    capture = _capture_writer(args)
    app = ScoringApp(model, args.endpoint_name, args.variant_name, capture)
    sock = socket.socket(fileno=args.fd)
    try:
        return _serve(app, sock, args.ready_fd, args.grace, args.read_timeout)
    finally:
        if capture is not None:
            capture.close()  # already closed on a graceful stop; a no-op then


def _score_one_row(model: LoadedModel) -> None:
    """Score a row of zeros: a model that loads but cannot score never serves.

    It also builds the small-batch fast path (``inference.scorer``), so the first
    request does not wait for it.
    """
    import numpy as np

    from inference.model import ModelLoadError

    try:
        model.predict(np.zeros((1, len(model.schema.features)), dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - any failure means it cannot serve
        raise ModelLoadError(f"the model loads but cannot score: {exc}") from exc


def _no_signal_cancels_parsing() -> None:
    """Keep Arrow from cancelling a CSV read on SIGTERM.

    pyarrow (25) installs its own SIGINT/SIGTERM handler for the length of a read and
    cancels the read when one arrives (``ArrowCancelled: ... received signal 15``): the
    SIGTERM that starts a drain failed the request being parsed with a 500. The worker
    handles SIGTERM itself (stop accepting, finish what it holds), so Arrow must not.
    """
    import pyarrow as pa

    pa.enable_signal_handlers(False)


def _protocol_with_read_timeout(seconds: float) -> type:
    """uvicorn's httptools protocol, closing a connection whose request is not whole
    ``seconds`` after the connection opened or its previous answer was sent.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ReadTimeoutProtocol(HttpToolsProtocol):
        _read_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_complete(self) -> None:
            self._disarm()  # the request is in: the app has its own clock
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline and not self.transport.is_closing():
                self._arm()  # the next request, if any, has as long

    return ReadTimeoutProtocol


def _capture_writer(args: argparse.Namespace) -> CaptureWriter | None:
    """The data capture writer the worker's generation asks for, if any."""
    if not args.data_capture_config or not args.data_capture_dir:
        return None
    from inference.capture import (
        DEFAULT_MAX_MB,
        DEFAULT_RETENTION_HOURS,
        CaptureBounds,
        CaptureSettings,
        CaptureWriter,
    )

    settings = CaptureSettings.from_config(
        json.loads(args.data_capture_config),
        Path(args.data_capture_dir),
        args.endpoint_name or "local",
        args.variant_name,
    )
    if settings is None:
        return None
    bounds = CaptureBounds.from_settings(
        args.data_capture_max_mb or DEFAULT_MAX_MB,
        args.data_capture_retention_hours or DEFAULT_RETENTION_HOURS,
    )
    return CaptureWriter(
        settings, flush_seconds=args.data_capture_flush_seconds, bounds=bounds
    ).start()


def _serve(
    app: object,
    sock: socket.socket,
    ready_fd: int,
    grace: float,
    read_timeout: float = _READ_TIMEOUT,
) -> int:
    import uvicorn
    import uvloop

    supervisor_pipe = _Pipe(ready_fd)

    class DrainingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn closes every connection that has no request in progress at
            # once. A keep-alive client may be sending its next request on such a
            # connection at that moment, and a connection accepted an instant ago
            # may not have delivered its request yet: both would fail (seen as
            # resets in tests/stack and as wrk read errors during a redeploy). So:
            # stop accepting, answer every request from now on with "Connection:
            # close", and give the open connections a moment to finish that way.
            for server in self.servers:
                server.close()
            # Only now may the supervisor report a redeploy done: until this
            # worker stops accepting, a new connection may still reach the old model.
            supervisor_pipe.tell(b"stopped\n")
            app.draining = True  # type: ignore[attr-defined]
            deadline = time.monotonic() + _DRAIN_SECONDS
            while self.server_state.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await super().shutdown(sockets)
            # Now, not after serve() returns: uvicorn re-raises the SIGTERM it
            # caught once serve() ends (0.54), and that ends the process at once.
            capture = getattr(app, "capture", None)
            if capture is not None:
                capture.close()  # what is still queued reaches the files

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="none",  # the loop is ours (uvloop, below)
        http=_protocol_with_read_timeout(read_timeout),
        lifespan="off",
        access_log=False,
        log_level="warning",
        # SageMaker sends SIGKILL 30 s after SIGTERM
        timeout_graceful_shutdown=int(grace),
        backlog=2048,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # nothing reads client addresses; saves a middleware hop
    )
    server = DrainingServer(config)
    supervisor = os.getppid()

    async def run() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            supervisor_pipe.tell(b"ready\n", close=False)
        else:
            supervisor_pipe.close()
        while not serving.done():
            # Orphaned (the supervisor was killed): stop rather than linger.
            if os.getppid() != supervisor:
                server.should_exit = True
            await asyncio.wait([serving], timeout=1.0)
        serving.result()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    finally:
        supervisor_pipe.close()
    return 0


class _Pipe:
    """The worker's end of its pipe to the supervisor: ``ready`` once it accepts,
    ``stopped`` once it no longer does; closed after ``stopped`` (or at exit).
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def tell(self, message: bytes, close: bool = True) -> None:
        if self._fd is None:
            return
        # OSError: the supervisor is gone (or predates this message)
        with contextlib.suppress(OSError):
            os.write(self._fd, message)
        if close:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
