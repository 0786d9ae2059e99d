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

What capture keeps is bounded (``CaptureBounds``: a total size and an age; the
deployment section's ``data_capture_max_mb`` and ``data_capture_retention_hours``). A
file rolls once it holds 1/64 of the size bound. The writer thread (never the request
path) sweeps the endpoint's folder after a write that rolled a file, every minute and
on close: files whose last record is older than the retention go, then the oldest
files until the folder holds at most 3/4 of the size bound. A sweep never deletes a
file a writer holds open: each writer holds a shared ``flock`` on its open files, and
a sweep deletes a file only under an exclusive one. The workers' sweeps of one folder
take turns (a flock on the folder), and a file already deleted is no error. Between
its sweeps a worker adds at most one file (1/64 of the bound) or one write (about
1 MB), whichever is more, so with up to 16 workers the folder stays within the bound.
SageMaker bounds nothing itself: on AWS the age bound is an S3 lifecycle rule on the
capture prefix (infra/platform.yaml), and S3 has no size bound.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import logging
import math
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
# What capture keeps, unless told (the defaults of the deployment section's
# data_capture_max_mb and data_capture_retention_hours, stack/config.py).
DEFAULT_MAX_MB = 1024
DEFAULT_RETENTION_HOURS = 168  # 7 days
SWEEP_SECONDS = 60.0  # the age sweep's period when no file rolls
# A file rolls at 1/FILE_SHARE of the size bound and a sweep leaves at most
# SWEEP_TARGET of it: room for 16 workers' unswept files before the bound is reached.
FILE_SHARE = 64
SWEEP_TARGET = 0.75


@dataclass(frozen=True)
class CaptureBounds:
    """How much of one endpoint's capture is kept: a total size and an age."""

    max_bytes: int = DEFAULT_MAX_MB << 20
    retention_seconds: float = DEFAULT_RETENTION_HOURS * 3600.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or not self.retention_seconds > 0:
            raise ValueError(
                f"capture bounds must be positive: max_bytes={self.max_bytes}, "
                f"retention_seconds={self.retention_seconds}"
            )

    @classmethod
    def from_settings(cls, max_mb: float, retention_hours: float) -> CaptureBounds:
        """Bounds from the configuration's units (MB of 2**20 bytes, hours)."""
        return cls(int(max_mb * (1 << 20)), retention_hours * 3600.0)

    @property
    def file_bytes(self) -> int:
        """The size at which a capture file rolls."""
        return max(1, self.max_bytes // FILE_SHARE)

    @property
    def target_bytes(self) -> int:
        """What a sweep leaves at most (files in use aside)."""
        return math.floor(self.max_bytes * SWEEP_TARGET)


@dataclass(frozen=True)
class SweepResult:
    deleted: int = 0  # files
    freed: int = 0  # bytes
    kept_bytes: int = 0  # what the folder held afterwards
    in_use: int = 0  # files that had to go but a writer holds open


def sweep_capture(
    folder: Path,
    bounds: CaptureBounds,
    now: float,
    keep: frozenset[Path] = frozenset(),
) -> SweepResult:
    """Delete the capture files under ``folder`` past ``bounds``: those whose last
    write is older than the retention, then the oldest until at most
    ``bounds.target_bytes`` remain. Files in ``keep`` or locked by a writer stay.

    Safe to run from several processes at once: sweeps of one folder take turns (an
    exclusive flock on the folder itself, held for the few milliseconds a sweep
    takes), and a file that vanished meanwhile counts as deleted. Empty hour folders
    are removed.
    """
    try:
        lock = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return SweepResult()  # nothing captured yet
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _sweep_locked(folder, bounds, now, keep)
    finally:
        os.close(lock)


def _sweep_locked(
    folder: Path, bounds: CaptureBounds, now: float, keep: frozenset[Path]
) -> SweepResult:
    files = sorted(_capture_files(folder), key=lambda f: (f[1], f[0]))
    expired_before = now - bounds.retention_seconds
    total = sum(size for _, _, size in files)
    deleted = freed = in_use = 0
    for path, mtime, size in files:
        expired = mtime <= expired_before
        if not expired and total <= bounds.target_bytes:
            break  # sorted by age: nothing younger has to go
        if path in keep or not _delete_unless_in_use(path):
            in_use += 1
            continue
        deleted += 1
        freed += size
        total -= size
    if deleted:
        _remove_empty_folders(folder)
    return SweepResult(deleted, freed, total, in_use)


def _capture_files(folder: Path) -> list[tuple[Path, float, int]]:
    """``(path, mtime, size)`` of each ``.jsonl`` file under ``folder``."""
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if not name.endswith(".jsonl"):
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # another worker's sweep deleted it
            found.append((path, stat.st_mtime, stat.st_size))
    return found


def _delete_unless_in_use(path: Path) -> bool:
    """Delete ``path`` unless a writer holds it (its shared flock); True if it is
    gone, whoever deleted it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _remove_empty_folders(folder: Path) -> None:
    """Remove the empty folders below ``folder``, deepest first. A writer that
    creates a file in one at the same moment retries (``CaptureWriter._open``).
    """
    for root, _dirs, _names in os.walk(folder, topdown=False):
        if Path(root) != folder:
            with contextlib.suppress(OSError):  # not empty, or already gone
                os.rmdir(root)


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
_Hour = tuple[int, int, int, int]


@dataclass
class _OpenFile:
    path: Path
    handle: BinaryIO
    size: int = 0


class CaptureWriter:
    """Captures a sample of one worker's invocations into hourly JSON Lines files.

    ``record`` is what the request path calls: it samples, then queues references to
    the bodies (no encoding, no I/O). A daemon thread writes them out and keeps the
    endpoint's folder within ``bounds`` (``sweep_capture``). ``close`` (on graceful
    shutdown) writes what is left.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        flush_seconds: float = FLUSH_SECONDS,
        flush_bytes: int = FLUSH_BYTES,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] | None = None,
        bounds: CaptureBounds | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.settings = settings
        self.bounds = bounds or CaptureBounds()
        self.sweep_seconds = sweep_seconds
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
        self._files: dict[_Hour, _OpenFile] = {}
        self._rolled = False  # a file filled up since the last sweep
        self._last_sweep = time.monotonic()
        self.captured = 0  # events written
        self.swept = 0  # files the sweeps deleted
        self.failed = 0  # events lost to a write failure
        self.dropped = 0  # events not queued: the backlog was full
        self._warned = False
        self._closed = False

    @property
    def folder(self) -> Path:
        """``<destination>/<EndpointName>/<VariantName>``."""
        return self.endpoint_folder / self.settings.variant_name

    @property
    def endpoint_folder(self) -> Path:
        """``<destination>/<EndpointName>``: what ``bounds`` bound."""
        return self.settings.directory / self.settings.endpoint_name

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
            if self._rolled:
                self._sweep()
            return written

    def sweep(self) -> SweepResult:
        """Close this writer's files of hours that are over (no event goes there any
        more, and an open file is never deleted), then bring the endpoint's folder
        within ``bounds`` (``sweep_capture``). Never raises.
        """
        with self._flush_lock:
            with contextlib.suppress(Exception):
                current = _hour_of(self._clock())
                for hour in [h for h in self._files if h < current]:
                    self._files.pop(hour).handle.close()
            return self._sweep()

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
            self._sweep()
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
            if time.monotonic() - self._last_sweep >= self.sweep_seconds:
                self.sweep()

    def _write(self, events: list[_Event]) -> int:
        by_hour: dict[_Hour, list[tuple[float, bytes]]] = {}
        for event in events:
            line = capture_line(self.settings, *event)
            by_hour.setdefault(_hour_of(event[0]), []).append((event[0], line))
        for hour, lines in by_hour.items():
            self._append(hour, lines)
        newest = max(by_hour)
        for hour in [h for h in self._files if h < newest]:
            self._files.pop(hour).handle.close()  # rotate: that hour is over
        return len(events)

    def _append(self, hour: _Hour, lines: list[tuple[float, bytes]]) -> None:
        """Append ``lines`` to the hour's file, rolling to a new file whenever one
        reaches ``bounds.file_bytes`` (so a sweep has whole files to delete).
        """
        limit = self.bounds.file_bytes
        pending: list[bytes] = []
        pending_size = 0
        current = self._files.get(hour)
        for when, line in lines:
            if current is None:
                current = self._files[hour] = self._open(hour, when)
            elif pending and current.size + pending_size + len(line) > limit:
                self._write_lines(current, pending)
                pending, pending_size = [], 0
            if not pending and current.size and current.size + len(line) > limit:
                current.handle.close()  # full: the next line starts a new file
                self._rolled = True
                current = self._files[hour] = self._open(hour, when)
            pending.append(line)
            pending_size += len(line)
        if current is not None and pending:
            self._write_lines(current, pending)

    def _write_lines(self, file: _OpenFile, lines: list[bytes]) -> None:
        data = b"".join(lines)
        _write_all(file.handle, data)
        file.size += len(data)

    def _open(self, hour: _Hour, first: float) -> _OpenFile:
        """A new file for ``hour``, named for its first event, held under a shared
        flock so that no sweep deletes it while it is written.
        """
        year, month, day, hh = hour
        folder = self.folder / f"{year:04d}" / f"{month:02d}" / f"{day:02d}"
        folder = folder / f"{hh:02d}"
        when = time.gmtime(first)
        millis = int((first % 1) * 1000)
        name = f"{when.tm_min:02d}-{when.tm_sec:02d}-{millis:03d}-{uuid.uuid4()}.jsonl"
        for attempt in (1, 2):  # a sweep may remove the empty folder in between
            folder.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(folder / name, "ab", buffering=0)  # noqa: SIM115
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            if os.fstat(handle.fileno()).st_nlink:
                return _OpenFile(folder / name, handle)
            handle.close()  # a sweep deleted it before the lock: open another
        raise OSError(f"cannot keep a capture file in {folder}")

    def _sweep(self) -> SweepResult:
        """The sweep, with ``_flush_lock`` held. Ages are file modification times,
        so they are measured on the wall clock, not the events' ``clock``.
        """
        self._last_sweep = time.monotonic()
        self._rolled = False
        try:
            result = sweep_capture(
                self.endpoint_folder,
                self.bounds,
                time.time(),
                keep=frozenset(f.path for f in self._files.values()),
            )
        except Exception as exc:  # noqa: BLE001 - capture must never fail serving
            self._failed(0, f"sweeping the capture folder failed: {exc}")
            return SweepResult()
        self.swept += result.deleted
        if result.deleted:
            log.debug(
                "data capture: deleted %d file(s), %d bytes; %d bytes kept",
                result.deleted,
                result.freed,
                result.kept_bytes,
            )
        return result

    def _close_files(self) -> None:
        for file in self._files.values():
            with contextlib.suppress(OSError):
                file.handle.close()
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


def _hour_of(moment: float) -> _Hour:
    when = time.gmtime(moment)
    return (when.tm_year, when.tm_mon, when.tm_mday, when.tm_hour)


def _write_all(handle: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if not written:
            raise OSError("the capture file accepted no bytes")
        view = view[written:]
