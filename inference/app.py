"""The scoring application: SageMaker's hosting contract as a plain ASGI app.

  GET  /ping                              200 once the model is loaded
  POST /invocations                       score a batch (see inference.codec)
  POST /endpoints/{name}/invocations      the same, at the SageMaker runtime API's path,
                                          so boto3's ``sagemaker-runtime`` client works
                                          against a local endpoint unchanged

``inference.server`` runs it: a supervisor and worker processes (``inference.worker``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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


class ScoringApp:
    """A plain ASGI application: no framework between the socket and the model.

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
        self._variant = variant_name.encode("latin-1")
        # Set while the worker shuts down: every answer then says "Connection: close",
        # so keep-alive clients reconnect (to the workers that stay) instead of
        # sending their next request on a connection that is about to close.
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.draining:
            send = _closing(send)
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await _error(send, 405, f"use POST {path}")
                return
            await self._invoke(scope, receive, send, runtime_api=False)
            return
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                await _error(send, 405, "use GET /ping")
                return
            await _respond(send, 200, b"", "text/plain")
            return
        if path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            if method != "POST":
                await _error(send, 405, f"use POST {path}")
            elif self.endpoint_name and name != self.endpoint_name:
                await _runtime_error(
                    send, 400, "ValidationError", f"Endpoint {name} not found."
                )
            else:
                await self._invoke(scope, receive, send, runtime_api=True)
            return
        await _error(send, 404, f"no route for {method} {path}")

    async def _invoke(
        self, scope: Scope, receive: Receive, send: Send, runtime_api: bool
    ) -> None:
        content_type = accept = encoding = ""
        inference_id = None
        declared = 0
        for key, value in scope["headers"]:
            key = key.lower()
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"accept":
                accept = value.decode("latin-1")
            elif key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
            elif key == b"x-amzn-sagemaker-inference-id":
                inference_id = value.decode("latin-1")
        fail = _model_error if runtime_api else _error
        if declared < 0:
            await fail(send, 400, "Content-Length is not a number")
            return
        if declared > MAX_PAYLOAD_BYTES:
            await fail(send, 413, f"the body exceeds {MAX_PAYLOAD_BYTES} bytes")
            return
        body = await _read_body(receive)
        if body is None:
            await fail(send, 413, f"the body exceeds {MAX_PAYLOAD_BYTES} bytes")
            return
        try:
            if encoding:  # captured decoded: the drift check reads what was scored
                body = decode_body(body, encoding)
            parsed = parse_request(body, content_type, self.model.schema)
            scores = self.model.predict(parsed.matrix)
            payload, media_type = encode_response(scores, accept, parsed.row_numbers)
        except RequestError as exc:
            await fail(send, exc.status, str(exc))
            return
        except Exception:  # a bug must answer 500 and leave the server serving
            log.exception("scoring failed")
            await fail(send, 500, "internal error while scoring")
            return
        await _respond(
            send,
            200,
            payload,
            media_type,
            [(b"x-amzn-invoked-production-variant", self._variant)],
        )
        if self.capture is not None:  # after the answer is on its way; never raises
            self.capture.record(body, content_type, payload, media_type, inference_id)


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


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    media_type: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", media_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(
        send,
        status,
        orjson.dumps({"error": message, "message": message}),
        "application/json",
    )


async def _runtime_error(send: Send, status: int, code: str, message: str) -> None:
    # botocore reads the error code of a rest-json service from this header.
    await _respond(
        send,
        status,
        orjson.dumps({"message": message}),
        "application/json",
        [(b"x-amzn-errortype", code.encode())],
    )


async def _model_error(send: Send, status: int, message: str) -> None:
    """What SageMaker's runtime answers when the container answered ``status``."""
    await _respond(
        send,
        424,
        orjson.dumps(
            {
                "message": f"Received client error ({status}) from primary with "
                f'message "{message}".'
                if status < 500
                else f"Received server error ({status}) from primary with "
                f'message "{message}".',
                "OriginalStatusCode": status,
                "OriginalMessage": message,
            }
        ),
        "application/json",
        [(b"x-amzn-errortype", b"ModelError")],
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
