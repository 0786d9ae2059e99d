"""Data capture for the local endpoint: requests and responses as SageMaker writes them.

With an endpoint config's ``DataCaptureConfig``, SageMaker hosting writes a sample of
the invocations to ``<DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/
<mm-ss-SSS>-<uuid4>.jsonl``, one JSON object per request::

    {"captureData": {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                          "data": "<body>", "encoding": "CSV"},
        "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                           "data": "<body>", "encoding": "CSV"}},
     "eventMetadata": {"eventId": "<uuid4>", "inferenceTime": "2026-11-24T10:00:00Z"},
     "eventVersion": "0"}

A body whose content type is listed in ``CaptureContentTypeHeader.CsvContentTypes`` or
``JsonContentTypes`` is written as text with encoding ``CSV`` or ``JSON``; any other
body (or no list at all) as ``BASE64``. ``CaptureOptions`` pick the input, the output
or both, and ``InitialSamplingPercentage`` the share of requests captured.

The local endpoint's folder stands in for ``DestinationS3Uri`` (the local object
store's folder for that URI). Each worker process writes its own files, so no lock is
shared between processes: a request only appends a reference to its bodies to an
in-memory queue; a background thread encodes and appends the lines every second (or
sooner once about 1 MB is waiting) and on shutdown, to one file per worker and hour.
Lines are appended whole, so a reader sees complete lines (and at most one unfinished
last line, which it ignores). Capture never fails or delays a prediction: a failure to
write is logged once and counted, and those events are dropped.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

log = logging.getLogger("inference.capture")

FLUSH_SECONDS = 1.0
FLUSH_BYTES = 1 << 20  # wake the writer early once this much body data waits
# Past this much body data waiting to be written (a disk slower than the traffic),
# new events are dropped and counted, so capture cannot exhaust a worker's memory;
# SageMaker likewise stops capturing when its disk fills.
MAX_BACKLOG_BYTES = 64 << 20


@dataclass(frozen=True)
class CaptureSettings:
    """What a ``DataCaptureConfig`` asks of one endpoint variant, locally."""

    directory: Path  # the local folder that stands for DestinationS3Uri
    endpoint_name: str
    variant_name: str
    sampling_percent: float
    capture_input: bool
    capture_output: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        directory: Path,
        endpoint_name: str,
        variant_name: str,
    ) -> CaptureSettings | None:
        """Settings from a ``DataCaptureConfig`` (CreateEndpointConfig's shape); None
        when capture is disabled or captures nothing.
        """
        if not config.get("EnableCapture", True):
            return None
        modes = {
            str(option.get("CaptureMode", "")).lower()
            for option in config.get("CaptureOptions") or []
        }
        capture_input = bool(modes & {"input", "inputandoutput"})
        capture_output = bool(modes & {"output", "inputandoutput"})
        percent = float(config.get("InitialSamplingPercentage", 0))
        if percent <= 0 or not (capture_input or capture_output):
            return None
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            directory=directory,
            endpoint_name=endpoint_name,
            variant_name=variant_name,
            sampling_percent=min(percent, 100.0),
            capture_input=capture_input,
            capture_output=capture_output,
            csv_types=_types(header.get("CsvContentTypes")),
            json_types=_types(header.get("JsonContentTypes")),
        )


def _types(values: Any) -> frozenset[str]:
    return frozenset(str(v).strip().lower() for v in values or [])


def encode_body(
    body: bytes, content_type: str, settings: CaptureSettings
) -> tuple[str, str]:
    """``(data, encoding)`` of a body as SageMaker captures it: text for a CSV or
    JSON content type of the config (matched with or without its parameters, so
    ``text/csv; charset=utf-8`` is CSV when ``text/csv`` is listed), else BASE64.
    """
    observed = content_type.strip().lower()
    media_type = observed.split(";")[0].strip()
    encoding = None
    if observed in settings.csv_types or media_type in settings.csv_types:
        encoding = "CSV"
    elif observed in settings.json_types or media_type in settings.json_types:
        encoding = "JSON"
    if encoding is not None:
        try:
            return body.decode("utf-8"), encoding
        except UnicodeDecodeError:
            pass  # not text after all: fall through to BASE64
    return base64.b64encode(body).decode("ascii"), "BASE64"


def capture_line(
    settings: CaptureSettings,
    inference_time: float,
    input_body: bytes,
    input_type: str,
    output_body: bytes,
    output_type: str,
    inference_id: str | None = None,
    event_id: str | None = None,
) -> bytes:
    """One JSON Lines record (with its newline) for one request."""
    capture: dict[str, Any] = {}
    if settings.capture_input:
        data, encoding = encode_body(input_body, input_type, settings)
        capture["endpointInput"] = {
            "observedContentType": input_type,
            "mode": "INPUT",
            "data": data,
            "encoding": encoding,
        }
    if settings.capture_output:
        data, encoding = encode_body(output_body, output_type, settings)
        capture["endpointOutput"] = {
            "observedContentType": output_type,
            "mode": "OUTPUT",
            "data": data,
            "encoding": encoding,
        }
    metadata = {
        "eventId": event_id or str(uuid.uuid4()),
        "inferenceTime": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(inference_time)
        ),
    }
    if inference_id:
        metadata["inferenceId"] = inference_id
    event = {"captureData": capture, "eventMetadata": metadata, "eventVersion": "0"}
    return orjson.dumps(event) + b"\n"


# (inference time, input body, input type, output body, output type, inference id)
_Event = tuple[float, bytes, str, bytes, str, "str | None"]


class CaptureWriter:
    """Captures a sample of one worker's invocations into hourly JSON Lines files.

    ``record`` is what the request path calls: it samples, then queues references to
    the bodies (no encoding, no I/O). A daemon thread writes them out. ``close`` (on
    graceful shutdown) writes what is left.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        flush_seconds: float = FLUSH_SECONDS,
        flush_bytes: int = FLUSH_BYTES,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self._clock = clock
        self._random = rng or random.Random().random  # noqa: S311 - sampling, not crypto
        self._queue: collections.deque[_Event] = collections.deque()
        self.max_backlog_bytes = max_backlog_bytes
        # Each counter has one writer: the request path (one event loop thread) the
        # first two, the writer thread the third; reading an int is atomic.
        self._queued_bytes = 0  # since the last early wake-up
        self._queued_total = 0
        self._written_total = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._files: dict[tuple[int, int, int, int], BinaryIO] = {}
        self.captured = 0  # events written
        self.failed = 0  # events lost to a write failure
        self.dropped = 0  # events not queued: the backlog was full
        self._warned = False
        self._closed = False

    @property
    def folder(self) -> Path:
        """``<destination>/<EndpointName>/<VariantName>``."""
        s = self.settings
        return s.directory / s.endpoint_name / s.variant_name

    def start(self) -> CaptureWriter:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="data-capture", daemon=True
            )
            self._thread.start()
        return self

    def record(
        self,
        input_body: bytes,
        input_type: str,
        output_body: bytes,
        output_type: str,
        inference_id: str | None = None,
    ) -> bool:
        """Queue one invocation if it falls in the sample; True if it did. Never
        raises.
        """
        try:
            percent = self.settings.sampling_percent
            if percent < 100.0 and self._random() * 100.0 >= percent:
                return False
            size = len(input_body) + len(output_body)
            if self._queued_total - self._written_total + size > self.max_backlog_bytes:
                self.dropped += 1
                self._failed(0, "the capture backlog is full; dropping events")
                return False
            self._queue.append(
                (
                    self._clock(),
                    input_body,
                    input_type,
                    output_body,
                    output_type,
                    inference_id,
                )
            )
            self._queued_total += size
            self._queued_bytes += size
            if self._queued_bytes >= self.flush_bytes:
                self._queued_bytes = 0
                self._wake.set()
            return True
        except Exception:  # noqa: BLE001 - capture must never fail a prediction
            self._failed(1, "queueing a captured event failed")
            return False

    def flush(self) -> int:
        """Write every queued event now; the number written."""
        with self._flush_lock:
            events = []
            while True:
                try:
                    events.append(self._queue.popleft())
                except IndexError:
                    break
            if not events:
                return 0
            self._written_total += sum(len(e[1]) + len(e[3]) for e in events)
            try:
                written = self._write(events)
            except Exception as exc:  # noqa: BLE001 - counted and logged once
                self._failed(len(events), f"writing captured events failed: {exc}")
                self._close_files()
                return 0
            self.captured += written
            return written

    def close(self) -> None:
        """Stop the writer thread, write what is queued and close the files (once;
        later calls do nothing).
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        with self._flush_lock:
            self._close_files()
        if self.failed or self.dropped:
            log.warning(
                "data capture: %d event(s) written, %d lost to write failures, "
                "%d dropped (backlog full)",
                self.captured,
                self.failed,
                self.dropped,
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def _write(self, events: list[_Event]) -> int:
        by_hour: dict[tuple[int, int, int, int], list[bytes]] = {}
        for event in events:
            when = time.gmtime(event[0])
            hour = (when.tm_year, when.tm_mon, when.tm_mday, when.tm_hour)
            lines = by_hour.setdefault(hour, [])
            if not lines and hour not in self._files:
                self._files[hour] = self._open(hour, event[0])
            lines.append(capture_line(self.settings, *event))
        for hour, lines in by_hour.items():
            _write_all(self._files[hour], b"".join(lines))
        newest = max(by_hour)
        for hour in [h for h in self._files if h < newest]:
            self._files.pop(hour).close()  # rotate: that hour is over
        return len(events)

    def _open(self, hour: tuple[int, int, int, int], first: float) -> BinaryIO:
        year, month, day, hh = hour
        folder = self.folder / f"{year:04d}" / f"{month:02d}" / f"{day:02d}"
        folder = folder / f"{hh:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        when = time.gmtime(first)
        millis = int((first % 1) * 1000)
        name = f"{when.tm_min:02d}-{when.tm_sec:02d}-{millis:03d}-{uuid.uuid4()}.jsonl"
        return open(folder / name, "ab", buffering=0)  # noqa: SIM115 - kept open

    def _close_files(self) -> None:
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._files.clear()

    def _failed(self, count: int, message: str) -> None:
        self.failed += count
        if not self._warned:
            self._warned = True
            log.warning(
                "data capture (pid %d): %s; predictions are unaffected, further "
                "failures are only counted",
                os.getpid(),
                message,
            )


def _write_all(handle: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError("the capture file accepted no bytes")
        view = view[written:]
