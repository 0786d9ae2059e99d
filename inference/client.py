"""A client for apps: score rows on an endpoint through SageMaker's InvokeEndpoint.

The client takes a boto3 ``sagemaker-runtime`` client, so the same code scores on AWS
and on the local endpoint (``LocalEndpoints.runtime_client()``, or any runtime client
built with ``endpoint_url`` pointing at our server). It

- splits the rows into batches whose CSV bodies stay under the payload limit
  (InvokeEndpoint refuses bodies over 6 MB; we keep a margin) and, if asked, under a
  row count,
- keeps up to ``concurrency`` requests in flight (an endpoint with several instances
  or workers scores them side by side); the scores come back in input order,
- retries throttling, 5xx answers (the model container's too, which botocore never
  retries: they come as a 424 ModelError), SageMaker's ModelNotReadyException and
  dropped connections with capped exponential backoff and full jitter, and never
  retries a 4xx (the request itself is wrong). It is meant to be the only retry
  layer: give it a runtime client made with botocore's retries off,
  ``Config(retries={"total_max_attempts": 1})``, as the resources' and the local
  endpoints' clients are (``stack.endpoints.RUNTIME_RETRIES``). With botocore's
  default (3 attempts a call in standard mode) each of our attempts would be three,
  and a warning says so,
- returns the scores as a numpy array, or as a DataFrame aligned with the input.

Example::

    client = EndpointClient(resources.endpoints.runtime_client(), "churn-endpoint")
    scores = client.predict(frame[schema.feature_names])
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

log = logging.getLogger("inference.client")

DEFAULT_MAX_PAYLOAD_BYTES = 5 * 1024 * 1024  # under InvokeEndpoint's 6 MB, with margin

_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalDependencyException",
        "ModelNotReadyException",
    }
)


# boto3 keeps 10 connections per client by default: more requests in flight than that
# would open and discard connections
MAX_CONCURRENCY = 10


class EndpointInvokeError(Exception):
    """Scoring failed; the message names the rows of the batch and the reason."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class EndpointClient:
    def __init__(
        self,
        runtime: Any,
        endpoint_name: str,
        feature_names: Sequence[str] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        max_rows: int | None = None,
        concurrency: int = 1,
    ) -> None:
        """
        Args:
            runtime: a boto3 ``sagemaker-runtime`` client.
            endpoint_name: the endpoint to invoke.
            feature_names: if given, DataFrame columns are picked in this order;
                otherwise a DataFrame's columns are sent as they are.
            max_payload_bytes: the largest request body the client sends.
            retry: how often and how long to retry throttling and 5xx answers.
            sleep: waits between retries (tests pass a recorder).
            seed: seeds the backoff jitter (tests).
            max_rows: at most this many rows per request (None: bytes decide).
            concurrency: requests in flight at once, 1 to ``MAX_CONCURRENCY``.
        """
        if max_payload_bytes < 64:
            raise ValueError("max_payload_bytes must be at least 64")
        if max_rows is not None and max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1 to {MAX_CONCURRENCY}")
        self.runtime = runtime
        self.endpoint_name = endpoint_name
        self.feature_names = list(feature_names) if feature_names else None
        self.max_payload_bytes = max_payload_bytes
        self.retry = retry
        self.max_rows = max_rows
        self.concurrency = concurrency
        self.requests_sent = 0  # InvokeEndpoint calls that answered, over the lifetime
        self._sleep = sleep
        self._rng = random.Random(seed)  # noqa: S311 - backoff jitter, not secrets
        self._lock = threading.Lock()
        inner = botocore_attempts(runtime)
        if inner > 1 and retry.max_attempts > 1:
            log.warning(
                "the runtime client retries each call itself (%d attempts), so a "
                "batch may be sent up to %d times; make it with botocore's retries "
                "off: Config(retries={'total_max_attempts': 1})",
                inner,
                inner * retry.max_attempts,
            )

    def predict(
        self, rows: pd.DataFrame | np.ndarray | Sequence[Sequence[Any]]
    ) -> np.ndarray:
        """One score per input row, in input order."""
        lines = csv_lines(self._matrix(rows))
        if not lines:
            return np.empty(0, dtype=np.float64)
        batches = list(_batches(lines, self.max_payload_bytes, self.max_rows))
        if self.concurrency == 1 or len(batches) == 1:
            scores = [self._invoke(batch, first) for first, batch in batches]
        else:
            with ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="invoke"
            ) as pool:
                # map keeps input order; the first failure is raised here and the
                # batches not yet started are cancelled
                scores = list(pool.map(lambda b: self._invoke(b[1], b[0]), batches))
        return np.concatenate(scores)

    def predict_frame(self, frame: pd.DataFrame, column: str = "score") -> pd.DataFrame:
        """The scores as a one-column DataFrame on the input's index."""
        return pd.DataFrame({column: self.predict(frame)}, index=frame.index)

    def _matrix(self, rows: Any) -> np.ndarray:
        if isinstance(rows, pd.DataFrame):
            frame = rows[self.feature_names] if self.feature_names else rows
            try:
                return frame.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                message = f"every feature column must be numeric: {exc}"
                raise ValueError(message) from exc
        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"expected 2-D rows, got shape {matrix.shape}")
        return matrix

    def _invoke(self, lines: list[bytes], first_row: int) -> np.ndarray:
        body = b"".join(lines)
        where = f"rows {first_row}-{first_row + len(lines) - 1}"
        attempt = 0
        while True:
            try:
                response = self.runtime.invoke_endpoint(
                    EndpointName=self.endpoint_name,
                    ContentType="text/csv",
                    Accept="application/json",
                    Body=body,
                )
                scores = orjson.loads(response["Body"].read())["predictions"]
            except Exception as exc:  # noqa: BLE001 - sorted into retry or not below
                reason = _retryable(exc)
                if reason is None:
                    raise EndpointInvokeError(f"{where}: {_describe(exc)}") from exc
                attempt += 1
                if attempt >= self.retry.max_attempts:
                    raise EndpointInvokeError(
                        f"{where}: still failing after {attempt} attempts ({reason})"
                    ) from exc
                self._sleep(self.retry.delay(attempt - 1, self._rng))
                continue
            if len(scores) != len(lines):
                raise EndpointInvokeError(
                    f"{where}: the endpoint answered {len(scores)} scores "
                    f"for {len(lines)} rows"
                )
            with self._lock:
                self.requests_sent += 1
            return np.asarray(scores, dtype=np.float64)


def botocore_attempts(runtime: Any) -> int:
    """How many times botocore itself sends each call of ``runtime`` (1: no
    retries); botocore's defaults when its config names no number.
    """
    retries = getattr(
        getattr(getattr(runtime, "meta", None), "config", None), "retries", None
    )
    if not isinstance(retries, dict):
        return 1  # not a botocore client (a test's stand-in)
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    if "max_attempts" in retries:  # retries after the first call
        return int(retries["max_attempts"]) + 1
    return 5 if retries.get("mode") == "legacy" else 3


def csv_lines(matrix: np.ndarray) -> list[bytes]:
    """One CSV line per row of a 2-D numeric array; a missing value is an empty
    field, which the server reads as missing.

    Arrow's writer (C++, shortest round-trip digits: a float32 comes back exactly) is
    7x faster than ``DataFrame.to_csv`` with a float format, which took 4.8 s of an
    8.5 s write-back of 136k rows (benchmarks/writeback.py).
    """
    if matrix.size == 0:
        return []
    table = pa.table(
        {
            str(i): pa.array(matrix[:, i], from_pandas=True)  # NaN -> null
            for i in range(matrix.shape[1])
        }
    )
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="none")
    )
    return buffer.getvalue().splitlines(keepends=True)


def _batches(
    lines: list[bytes], limit: int, max_rows: int | None = None
) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive runs of lines whose joined size stays within ``limit`` bytes and,
    if given, whose length stays within ``max_rows``.
    """
    start, size = 0, 0
    for i, line in enumerate(lines):
        if len(line) > limit:
            raise EndpointInvokeError(
                f"row {i} alone is {len(line)} bytes, "
                f"over the {limit}-byte payload limit"
            )
        if size + len(line) > limit or (max_rows and i - start == max_rows):
            yield start, lines[start:i]
            start, size = i, 0
        size += len(line)
    yield start, lines[start:]


def _retryable(exc: Exception) -> str | None:
    """Why ``exc`` is worth another attempt, or None if it is not."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(
        exc, ConnectionClosedError | EndpointConnectionError | ReadTimeoutError
    ):
        return type(exc).__name__
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    original = exc.response.get("OriginalStatusCode")
    if code in _RETRYABLE_CODES:
        return code
    if code == "ModelError" and isinstance(original, int) and original >= 500:
        return f"ModelError {original}"
    if code != "ModelError" and status >= 500:
        return f"HTTP {status}"
    return None


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        original = exc.response.get("OriginalMessage")
        return f"{error.get('Code')}: {original or error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
