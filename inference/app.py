"""The scoring application: SageMaker's hosting contract, as plain functions and ASGI.

  GET  /ping                              200 once the model is loaded
  POST /invocations                       score a batch (see inference.codec)
  POST /endpoints/{name}/invocations      the same, at the SageMaker runtime API's path,
                                          so boto3's ``sagemaker-runtime`` client works
                                          against a local endpoint unchanged

The answers are computed by synchronous methods (``ScoringApp.answer_early``, then
``ScoringApp.invoke`` with the body) that return a ``Reply``: the worker's HTTP layer
(``inference.worker``) calls them straight from its parser's callbacks, with no task
or ASGI message per request. ``ScoringApp`` is also a plain ASGI app built on the same
methods, for the tests and any ASGI server.

``inference.server`` runs it: a supervisor and worker processes (``inference.worker``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from inference.capture import CaptureWriter
from inference.codec import (
    MAX_PAYLOAD_BYTES,
    RequestError,
    decode_body,
    encode_response,
    parse_request,
)
from inference.model import LoadedModel

log = logging.getLogger("inference.app")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

# How a request's route was resolved: an invocation answered as a container, or as
# the SageMaker runtime API (errors become ModelError).
CONTAINER, RUNTIME_API = 1, 2


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: status, body, its media type and any further headers."""

    status: int
    body: bytes
    media_type: str
    headers: Headers = ()


@dataclass(slots=True)
class Invocation:
    """What an invocation needs from the request's headers."""

    content_type: str = ""
    accept: str = ""
    encoding: str = ""
    inference_id: str | None = None


class ScoringApp:
    """SageMaker's hosting contract: no framework between the socket and the model.

    ``/invocations`` answers like a SageMaker container (errors as 4xx with a JSON
    message). ``/endpoints/{name}/invocations`` answers like the SageMaker runtime API
    in front of that container: a container error becomes ``ModelError`` (HTTP 424 with
    the original status and message), so boto3 raises what it would raise on AWS.
    """

    def __init__(
        self,
        model: LoadedModel,
        endpoint_name: str | None = None,
        variant_name: str = "AllTraffic",
        capture: CaptureWriter | None = None,
    ) -> None:
        self.model = model
        self.capture = capture  # data capture (inference.capture), when configured
        self.endpoint_name = endpoint_name
        self._variant = (
            (b"x-amzn-invoked-production-variant", variant_name.encode("latin-1")),
        )
        # Set while the worker shuts down: every answer then says "Connection: close",
        # so keep-alive clients reconnect (to the workers that stay) instead of
        # sending their next request on a connection that is about to close.
        self.draining = False

    # ----------------------------------------------------------------- the contract

    def route(self, method: str, path: str) -> int | Reply:
        """``CONTAINER`` or ``RUNTIME_API`` for an invocation, which needs its body;
        else the whole answer (``/ping``, a wrong method, an unknown path).
        """
        if path == "/invocations":
            if method != "POST":
                return _error(405, f"use POST {path}")
            return CONTAINER
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return _error(405, "use GET /ping")
            return _PONG
        if path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            if method != "POST":
                return _error(405, f"use POST {path}")
            if self.endpoint_name and name != self.endpoint_name:
                return _runtime_error(
                    400, "ValidationError", f"Endpoint {name} not found."
                )
            return RUNTIME_API
        return _error(404, f"no route for {method} {path}")

    def refuse(self, kind: int, status: int, message: str) -> Reply:
        """An invocation's error answer, as a container or as the runtime API."""
        return (_model_error if kind == RUNTIME_API else _error)(status, message)

    def too_large(self, kind: int) -> Reply:
        """The answer to a body over SageMaker's limit (declared or received)."""
        return self.refuse(kind, 413, f"the body exceeds {MAX_PAYLOAD_BYTES} bytes")

    def invoke(
        self, kind: int, request: Invocation, body: bytes
    ) -> tuple[Reply, bytes]:
        """Score ``body``: the answer, and the body as scored (decoded), which
        ``record`` captures once the answer is on its way.
        """
        try:
            if request.encoding:  # captured decoded: the drift check reads that
                body = decode_body(body, request.encoding)
            parsed = parse_request(body, request.content_type, self.model.schema)
            scores = self.model.predict(parsed.matrix)
            payload, media_type = encode_response(
                scores, request.accept, parsed.row_numbers
            )
        except RequestError as exc:
            return self.refuse(kind, exc.status, str(exc)), body
        except Exception:  # a bug must answer 500 and leave the server serving
            log.exception("scoring failed")
            return self.refuse(kind, 500, "internal error while scoring"), body
        return Reply(200, payload, media_type, self._variant), body

    def record(self, request: Invocation, body: bytes, reply: Reply) -> None:
        """Data capture of an answered request (200 only; never raises)."""
        if self.capture is not None and reply.status == 200:
            self.capture.record(
                body,
                request.content_type,
                reply.body,
                reply.media_type,
                request.inference_id,
            )

    # ----------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.draining:
            send = _closing(send)
        kind = self.route(scope["method"], scope["path"])
        if isinstance(kind, Reply):
            await _respond(send, kind)
            return
        request, declared = read_headers(scope["headers"])
        if declared < 0:
            await _respond(
                send, self.refuse(kind, 400, "Content-Length is not a number")
            )
            return
        if declared > MAX_PAYLOAD_BYTES:
            await _respond(send, self.too_large(kind))
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, self.too_large(kind))
            return
        reply, scored = self.invoke(kind, request, body)
        await _respond(send, reply)
        self.record(request, scored, reply)  # after the answer is on its way


def read_headers(headers: Any) -> tuple[Invocation, int]:
    """The invocation's headers and the declared Content-Length (0 if none, -1 if
    it is not a number).
    """
    request = Invocation()
    declared = 0
    for key, value in headers:
        key = key.lower()
        if key == b"content-type":
            request.content_type = value.decode("latin-1")
        elif key == b"accept":
            request.accept = value.decode("latin-1")
        elif key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = -1
        elif key == b"content-encoding":
            request.encoding = value.decode("latin-1")
        elif key == b"x-amzn-sagemaker-inference-id":
            request.inference_id = value.decode("latin-1")
    return request, declared


_PONG = Reply(200, b"", "text/plain")


def _closing(send: Send) -> Send:
    async def send_with_close(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], _CLOSE]}
        await send(message)

    return send_with_close


_CLOSE = (b"connection", b"close")


async def _read_body(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_PAYLOAD_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.media_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
    ]
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": reply.body})


def _error(status: int, message: str) -> Reply:
    return Reply(
        status,
        orjson.dumps({"error": message, "message": message}),
        "application/json",
    )


def _runtime_error(status: int, code: str, message: str) -> Reply:
    # botocore reads the error code of a rest-json service from this header.
    return Reply(
        status,
        orjson.dumps({"message": message}),
        "application/json",
        ((b"x-amzn-errortype", code.encode()),),
    )


def _model_error(status: int, message: str) -> Reply:
    """What SageMaker's runtime answers when the container answered ``status``."""
    side = "client" if status < 500 else "server"
    return Reply(
        424,
        orjson.dumps(
            {
                "message": f"Received {side} error ({status}) from primary with "
                f'message "{message}".',
                "OriginalStatusCode": status,
                "OriginalMessage": message,
            }
        ),
        "application/json",
        ((b"x-amzn-errortype", b"ModelError"),),
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
