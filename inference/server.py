"""The serving container's HTTP server: SageMaker's hosting contract on uvicorn.

  GET  /ping                              200 once the model is loaded
  POST /invocations                       score a batch (see inference.codec)
  POST /endpoints/{name}/invocations      the same, at the SageMaker runtime API's path,
                                          so boto3's ``sagemaker-runtime`` client works
                                          against a local endpoint unchanged

Run it as ``python -m inference.server --model-dir DIR --port 8080``. The same module is
what ``docker run IMAGE serve`` starts in our image.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from inference.codec import (
    MAX_PAYLOAD_BYTES,
    RequestError,
    encode_response,
    parse_request,
)
from inference.model import LoadedModel, load_model

log = logging.getLogger("inference.server")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ScoringApp:
    """A plain ASGI application: no framework between the socket and the model."""

    def __init__(self, model: LoadedModel, endpoint_name: str | None = None) -> None:
        self.model = model
        self.endpoint_name = endpoint_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                await _error(send, 405, "use GET /ping")
                return
            await _respond(send, 200, b"", "text/plain")
            return
        if path == "/invocations" or (
            path.startswith("/endpoints/") and path.endswith("/invocations")
        ):
            if method != "POST":
                await _error(send, 405, f"use POST {path}")
                return
            await self._invoke(scope, receive, send)
            return
        await _error(send, 404, f"no route for {method} {path}")

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
        }
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            await _error(send, 400, "Content-Length is not a number")
            return
        if declared > MAX_PAYLOAD_BYTES:
            await _error(send, 413, f"the body exceeds {MAX_PAYLOAD_BYTES} bytes")
            return
        body = await _read_body(receive)
        if body is None:
            await _error(send, 413, f"the body exceeds {MAX_PAYLOAD_BYTES} bytes")
            return
        try:
            parsed = parse_request(
                body, headers.get("content-type", ""), self.model.schema
            )
            scores = self.model.predict(parsed.matrix)
            payload, media_type = encode_response(
                scores, headers.get("accept", ""), parsed.row_numbers
            )
        except RequestError as exc:
            await _error(send, exc.status, str(exc))
            return
        except Exception:  # a bug must answer 500 and leave the server serving
            log.exception("scoring failed")
            await _error(send, 500, "internal error while scoring")
            return
        await _respond(send, 200, payload, media_type)


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


async def _respond(send: Send, status: int, body: bytes, media_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(
        send,
        status,
        orjson.dumps({"error": message, "message": message}),
        "application/json",
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inference.server")
    parser.add_argument(
        "--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    )
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container listens on all
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", 8080))
    )
    parser.add_argument("--endpoint-name", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One OpenMP thread per worker: XGBoost's default threading oversubscribes small
    # hosts.
    model = load_model(Path(args.model_dir), threads=1)
    import uvicorn

    uvicorn.run(
        ScoringApp(model, args.endpoint_name),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=25,  # SageMaker sends SIGKILL 30 s after SIGTERM
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
