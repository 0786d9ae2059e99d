"""One serving worker: load the model once, then serve the supervisor's socket.

Started by ``inference.supervisor`` as ``python -m inference.worker --fd N --ready-fd M
--model-dir DIR``. The listening socket is inherited from the supervisor, so every
worker (and the next generation of workers during a redeploy) accepts from one queue:
no connection waits in a socket that is about to close. The worker writes ``ready`` to
``--ready-fd`` once it accepts connections and exits non-zero if the model cannot load.
SIGTERM stops accepting and then writes ``stopped`` to ``--ready-fd`` (so the supervisor
knows that no connection opened from then on reaches this worker), answers further
requests on open connections with ``Connection: close`` for up to 2 s, closes the idle
ones, lets requests under way arrive and be answered (up to ``--grace`` seconds) and
exits.

The worker speaks HTTP/1.1 itself (``HttpServer``: httptools' parser on a uvloop
Protocol) and answers each request with the app's synchronous methods
(``inference.app``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httptools
import orjson

# load_model and ScoringApp are called through their modules: tests replace them there
import inference.app
import inference.model
from inference.app import Invocation, Reply
from inference.capture import (
    DEFAULT_MAX_MB,
    DEFAULT_RETENTION_HOURS,
    CaptureBounds,
    CaptureSettings,
    CaptureWriter,
)
from inference.codec import MAX_PAYLOAD_BYTES
from inference.model import ModelLoadError, import_xgboost_without_scikit_learn
from inference.scorer import SMALL_BATCH_ROWS

if TYPE_CHECKING:
    from inference.app import ScoringApp
    from inference.model import LoadedModel

log = logging.getLogger("inference.worker")

# Measured: XGBoost's default OpenMP threading in each of several workers oversubscribes
# a small host 10-30x; set before the OpenMP runtime loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# How long open connections get to send one more request (answered with "Connection:
# close") before the rest are closed; well under SageMaker's 30 s.
_DRAIN_SECONDS = 2.0
# How long a client has to deliver a whole request (headers and body) once it has
# connected or had its previous answer: a slow or stalled client is disconnected then.
_READ_TIMEOUT = 30.0
# How long an idle keep-alive connection is kept open (uvicorn's default, which the
# endpoint kept when its workers stopped running uvicorn).
_KEEP_ALIVE_SECONDS = 5.0
# How often the timeouts above are checked.
_SWEEP_SECONDS = 0.25
# The most a request line and headers may take.
_MAX_HEAD_BYTES = 64 * 1024


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

    import_xgboost_without_scikit_learn()
    _no_signal_cancels_parsing()
    small_batch_rows = (
        SMALL_BATCH_ROWS if args.small_batch_rows is None else args.small_batch_rows
    )
    try:
        model = inference.model.load_model(Path(args.model_dir), 1, small_batch_rows)
        _score_one_row(model)  # proves it answers before it reports ready
    except ModelLoadError as exc:
        print(f"worker {os.getpid()}: {exc}", file=sys.stderr)
        return 3
    capture = _capture_writer(args)
    app = inference.app.ScoringApp(
        model, args.endpoint_name, args.variant_name, capture
    )
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


def _capture_writer(args: argparse.Namespace) -> CaptureWriter | None:
    """The data capture writer the worker's generation asks for, if any."""
    if not args.data_capture_config or not args.data_capture_dir:
        return None
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
    app: ScoringApp,
    sock: socket.socket,
    ready_fd: int,
    grace: float,
    read_timeout: float = _READ_TIMEOUT,
) -> int:
    """Serve ``sock`` on uvloop until SIGTERM/SIGINT (or the supervisor is gone),
    then drain (see the module docstring).
    """
    import uvloop

    supervisor_pipe = _Pipe(ready_fd)
    http_server = HttpServer(app, read_timeout)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        acceptor = _Acceptor(loop, sock, http_server)
        acceptor.start()
        supervisor_pipe.tell(b"ready\n", close=False)
        supervisor = os.getppid()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SWEEP_SECONDS)
            http_server.sweep()
            if os.getppid() != supervisor:  # orphaned: stop rather than linger
                stop.set()
        # Stop accepting; only now may the supervisor report a redeploy done: until
        # this worker stops accepting, a new connection may still reach the old model.
        acceptor.stop()
        supervisor_pipe.tell(b"stopped\n")
        await http_server.drain(_DRAIN_SECONDS, grace)
        if app.capture is not None:
            app.capture.close()  # what is still queued reaches the files

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    finally:
        supervisor_pipe.close()
    return 0


class _Acceptor:
    """Takes connections from the socket the workers share, one per wake-up.

    An event loop's own server (``loop.create_server``) accepts every connection
    waiting at once, so the worker that wakes first takes a whole burst: of the 8
    keep-alive connections a client opens together, one worker often got all 8 and
    the other none, which halved what the endpoint could serve (docs/benchmarks.md,
    "The workers' share of connections"). Taking one connection per wake-up, every
    idle worker takes its turn; a busy worker, which wakes later, takes fewer.
    """

    _PAUSE_SECONDS = 0.1  # after an accept that failed (out of descriptors, say)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop, self.sock, self.protocol_factory = loop, sock, protocol_factory
        self.sock.setblocking(False)
        self._accepting = False
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        self._accepting = True
        self.loop.add_reader(self.sock.fileno(), self._accept_one)

    def stop(self) -> None:
        """Accept no more; the connections already taken are served on."""
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def _accept_one(self) -> None:
        try:
            connection, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:
            log.warning("cannot accept a connection (%s); pausing accepts", exc)
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(self._PAUSE_SECONDS, self._resume)
            return
        connection.setblocking(False)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened = asyncio.ensure_future(
            self.loop.connect_accepted_socket(self.protocol_factory, connection)
        )
        self._pending.add(opened)
        opened.add_done_callback(functools.partial(self._opened, connection))

    def _opened(self, connection: socket.socket, opened: asyncio.Future[Any]) -> None:
        self._pending.discard(opened)
        if opened.cancelled() or opened.exception() is not None:
            connection.close()

    def _resume(self) -> None:
        if self._accepting:
            self.loop.add_reader(self.sock.fileno(), self._accept_one)


class HttpServer:
    """HTTP/1.1 for the scoring app, straight on asyncio's Protocol and httptools.

    Each request is answered from the parser's callbacks by the app's synchronous
    methods (``inference.app``): no task, no ASGI messages and no awaits per request.
    Measured on a 1-row request with the same app: 240-250 us of a worker's CPU under
    uvicorn (0.54), about 190 us under this (docs/benchmarks.md, "Small batches",
    "Second pass"). Scoring is synchronous CPU work whichever way it is called, so
    nothing is lost: a connection's requests, pipelined or not, are answered in order.

    It keeps what the endpoint promised under uvicorn: keep-alive (HTTP/1.0 too when
    asked), Content-Length and chunked bodies, ``Expect: 100-continue``, 413 for a
    body over SageMaker's 6 MB (declared: answered before reading it), 400 naming the
    fault for a malformed request, 431 for a head over 64 KB (then the connection
    closes and the worker serves on), write back-pressure, the read timeout of a
    request and the idle timeout of a keep-alive connection (5 s), and the drain.
    """

    def __init__(
        self,
        app: ScoringApp,
        read_timeout: float = _READ_TIMEOUT,
        keep_alive: float = _KEEP_ALIVE_SECONDS,
    ) -> None:
        self.app = app
        self.read_timeout = read_timeout
        # an idle connection has as long as a request would, at most ``keep_alive``
        self.idle_timeout = min(keep_alive, read_timeout)
        self.connections: set[_Connection] = set()

    def __call__(self) -> _Connection:
        return _Connection(self)

    def sweep(self) -> None:
        """Close the connections whose request is late or whose idle time is up."""
        if not self.connections:
            return
        now = time.monotonic()
        for connection in list(self.connections):
            connection.check(now)

    async def drain(self, drain_seconds: float, grace: float) -> None:
        """After the listener closed: every answer says ``Connection: close`` from
        now on; open connections get ``drain_seconds`` to send one more request,
        then the idle ones are closed and requests under way get up to ``grace``
        seconds to arrive and be answered.
        """
        self.app.draining = True
        deadline = time.monotonic() + drain_seconds
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close_if_idle()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            self.sweep()
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.abort()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers each when it is whole."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._app = server.app
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._since = time.monotonic()  # opened, or its previous answer was sent
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._busy = False  # a request has begun and is not answered yet
        # Its head (request line and headers) is not whole yet; ``_head`` counts the
        # bytes of it that came after the packet it began in (which is bounded by
        # the read size): httptools buffers a header until it ends.
        self._in_head = False
        self._head = 0
        self._url = b""
        self._method = ""
        self._request = Invocation()
        self._declared = 0
        self._expect = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._kind = 0
        self._early: Reply | None = None  # answered without reading the body
        self._keep_alive = True
        self._http10 = False
        self._refused = False  # answered 413; the rest of the body is dropped

    # ----------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()  # answered (see on_headers_complete); the rest is not HTTP
            return
        except httptools.HttpParserCallbackError:
            log.exception("the HTTP layer failed on a request")
            self._fail(500, "internal error while reading the request")
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
            return
        if in_head and self._in_head:  # all of ``data`` is head: count it
            self._head += len(data)
            if self._head > _MAX_HEAD_BYTES:
                self._fail(431, f"the request head exceeds {_MAX_HEAD_BYTES} bytes")

    def pause_writing(self) -> None:
        # the client does not read its answers: read no more requests until it does
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # ----------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._busy = self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self._request.content_type = value.decode("latin-1")
        elif name == b"accept":
            self._request.accept = value.decode("latin-1")
        elif name == b"content-length":
            self._declared = int(value)  # llhttp has checked it is a number
        elif name == b"content-encoding":
            self._request.encoding = value.decode("latin-1")
        elif name == b"x-amzn-sagemaker-inference-id":
            self._request.inference_id = value.decode("latin-1")
        elif name == b"expect":
            self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        self._method = method = parser.get_method().decode("ascii")
        self._keep_alive = parser.should_keep_alive()
        self._http10 = parser.get_http_version() == "1.0"
        kind = self._app.route(method, _path(self._url))
        if isinstance(kind, Reply):
            self._early = kind
            return
        self._kind = kind
        if parser.should_upgrade():
            # llhttp hands over the bytes after the head as the upgraded protocol,
            # so the body cannot be read: refuse, and close after the answer
            self._early = self._app.refuse(
                kind, 400, "protocol upgrades are not supported; send plain HTTP/1.1"
            )
        elif self._declared > MAX_PAYLOAD_BYTES:
            self._refuse_body(kind)
        elif self._expect:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self._early is not None or self._refused:
            return  # answered without its body
        self._size += len(body)
        if self._size > MAX_PAYLOAD_BYTES:  # chunked, so not declared
            self._chunks = []
            self._refuse_body(self._kind)
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._closed:
            return
        if self._refused:
            self.close()  # the body it was answered for is in: close as it said
            return
        if self._early is not None:
            self._respond(self._early)
        else:
            chunks = self._chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            request = self._request
            reply, scored = self._app.invoke(self._kind, request, body)
            self._respond(reply)
            self._app.record(request, scored, reply)  # after the answer is sent
        self._reset()

    # ----------------------------------------------------------- answers

    def _respond(self, reply: Reply, close: bool = False, linger: bool = False) -> None:
        close = close or not self._keep_alive or self._app.draining
        head = [
            _STATUS_LINES.get(reply.status) or _status_line(reply.status),
            _content_type(reply.media_type),
            b"content-length: %d\r\n" % len(reply.body),
        ]
        for name, value in reply.headers:
            head += (name, b": ", value, b"\r\n")
        if close:
            head.append(b"connection: close\r\n")
        elif self._http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        if self._method != "HEAD":
            head.append(reply.body)
        transport = self._transport
        assert transport is not None
        transport.write(b"".join(head))
        self._since = time.monotonic()
        if close and not linger:
            self.close()

    def _refuse_body(self, kind: int) -> None:
        """Answer 413 at once, read and drop the rest of the body (closing with
        unread bytes would reset the connection, and the client could lose the
        answer), then close: the read timeout bounds how long that takes.
        """
        self._respond(self._app.too_large(kind), close=True, linger=True)
        self._refused = True

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close the connection."""
        if not self._closed:
            self._method = ""
            self._respond(
                Reply(
                    status,
                    orjson.dumps({"error": message, "message": message}),
                    "application/json",
                ),
                close=True,
            )

    # ----------------------------------------------------------- closing

    def check(self, now: float) -> None:
        """Close this connection if its request is late or its idle time is up."""
        limit = self._server.read_timeout if self._busy else self._server.idle_timeout
        if now - self._since > limit:
            self.close()

    def close_if_idle(self) -> None:
        if not self._busy:
            self.close()

    def close(self) -> None:
        self._closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


def _path(url: bytes) -> str:
    """The path of a request target, percent-decoded."""
    if url[:1] == b"/" and b"?" not in url and b"%" not in url and b"#" not in url:
        return url.decode("latin-1")  # the usual case, without parsing it
    try:
        path = httptools.parse_url(url).path or b"/"
    except httptools.HttpParserInvalidURLError:
        return url.decode("latin-1")  # routes nowhere: 404 names it
    return urllib.parse.unquote(path.decode("latin-1"))


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("latin-1"))


_STATUS_LINES = {status.value: _status_line(status.value) for status in http.HTTPStatus}


@functools.lru_cache(maxsize=64)
def _content_type(media_type: str) -> bytes:
    return b"content-type: " + media_type.encode("latin-1") + b"\r\n"


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
