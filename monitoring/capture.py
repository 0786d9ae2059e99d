"""Read an endpoint's data capture back as scored rows (the drift check's input).

SageMaker (and our local endpoint, see ``inference.capture``) writes one JSON Lines
record per request under ``<prefix>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/``.
``read_capture`` lists only the hour folders that overlap the window, keeps the events
whose ``inferenceTime`` falls in it, and decodes each request body with the endpoint's
own parser (``inference.codec``: CSV, JSON records/instances/columns and Snowflake's
``{"data": [[row, f1, ...], ...]}``), so a body the endpoint scored is read the way it
was scored (features as float32). An event that cannot be decoded (malformed JSON, a
body the codec refuses, scores that do not match the rows, no captured input) is
counted in ``df.attrs["undecodable"]`` and skipped, never fatal.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd

from features import FeatureSchema, load_feature_set
from inference.codec import RequestError, parse_request
from stack.objectstore import ObjectNotFound, ObjectStore, join_uri

log = logging.getLogger("monitoring.capture")

PREDICTION = "prediction"
INFERENCE_TIME = "inference_time"


class _Undecodable(Exception):
    """One captured event that cannot be turned into scored rows."""


def read_capture(
    store: ObjectStore,
    prefix_uri: str,
    endpoint: str,
    start: datetime,
    end: datetime,
    schema: FeatureSchema | None = None,
    variant: str = "AllTraffic",
) -> pd.DataFrame:
    """Captured rows of ``endpoint`` with ``start <= inferenceTime < end``.

    Args:
        store: the object store holding the capture (S3 or the local folder).
        prefix_uri: ``DataCaptureConfig.DestinationS3Uri``
            (``deployment.data_capture_s3_uri``).
        endpoint: the endpoint name (the first folder under the prefix).
        start, end: the window; naive datetimes are taken as UTC.
        schema: the features the endpoint scores (default: the churn feature set).
        variant: the production variant's folder.

    Returns:
        One row per scored record: the schema's feature columns (float, NaN for
        missing), ``prediction`` (float, NaN if the output was not captured) and
        ``inference_time`` (UTC). ``df.attrs["undecodable"]`` counts the events
        skipped, ``df.attrs["events"]`` the events read in the window.
    """
    schema = schema or load_feature_set("churn").schema
    start, end = _utc(start), _utc(end)
    base = join_uri(prefix_uri, endpoint, variant)
    matrices: list[np.ndarray] = []
    predictions: list[np.ndarray] = []
    times: list[np.ndarray] = []
    events = undecodable = 0
    for uri in _files(store, base, start, end):
        try:
            data = store.read_bytes(uri)
        except ObjectNotFound:
            # swept by the capture bound (or an S3 lifecycle rule) since the listing:
            # only the oldest files go, so what is left of the window is still read
            log.info("capture file %s went before it was read; skipped", uri)
            continue
        for line, complete in _lines(data):
            try:
                event = orjson.loads(line)
                when = _inference_time(event)
            except (orjson.JSONDecodeError, _Undecodable):
                if complete:  # an unfinished last line is still being written
                    undecodable += 1
                continue
            if not start <= when < end:
                continue
            events += 1
            try:
                matrix, scores = _decode(event, schema)
            except _Undecodable as exc:
                undecodable += 1
                log.debug("skipped an event in %s: %s", uri, exc)
                continue
            matrices.append(matrix)
            predictions.append(scores)
            times.append(np.full(len(scores), np.datetime64(when.replace(tzinfo=None))))
    frame = _frame(schema, matrices, predictions, times)
    frame.attrs["undecodable"] = undecodable
    frame.attrs["events"] = events
    if undecodable:
        log.warning("%d captured event(s) could not be decoded", undecodable)
    return frame


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += timedelta(hours=1)


def _files(store: ObjectStore, base: str, start: datetime, end: datetime) -> list[str]:
    """The capture files in the hour folders that overlap [start, end)."""
    found: list[str] = []
    for hour in _hours(start, end):
        found.extend(
            uri
            for uri in store.list(join_uri(base, f"{hour:%Y/%m/%d/%H}") + "/")
            if uri.endswith(".jsonl")
        )
    return found


def _lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Non-empty lines, each with whether it ended with a newline."""
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if line.strip():
            yield line, i < last


def _inference_time(event: Any) -> datetime:
    try:
        text = event["eventMetadata"]["inferenceTime"]
        return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _Undecodable("no readable eventMetadata.inferenceTime") from None


def _body(part: dict[str, Any]) -> tuple[bytes, str]:
    try:
        data, encoding = part["data"], str(part.get("encoding", "")).upper()
        content_type = str(part.get("observedContentType") or "")
        if encoding == "BASE64":
            return base64.b64decode(data, validate=True), content_type
        return str(data).encode("utf-8"), content_type
    except (KeyError, TypeError, ValueError) as exc:
        raise _Undecodable(f"unreadable captured body: {exc}") from None


def _decode(event: dict[str, Any], schema: FeatureSchema) -> tuple[np.ndarray, Any]:
    capture = event.get("captureData") or {}
    if "endpointInput" not in capture:
        raise _Undecodable("the input was not captured")
    body, content_type = _body(capture["endpointInput"])
    try:
        matrix = parse_request(body, content_type, schema).matrix
    except RequestError as exc:
        raise _Undecodable(f"the input cannot be parsed: {exc}") from None
    if "endpointOutput" not in capture:
        return matrix, np.full(len(matrix), np.nan)
    scores = _scores(*_body(capture["endpointOutput"]))
    if len(scores) != len(matrix):
        raise _Undecodable(f"{len(scores)} scores for {len(matrix)} rows")
    return matrix, scores


def _scores(body: bytes, content_type: str) -> np.ndarray:
    """Scores from a response body: ``{"predictions": [...]}``, Snowflake's
    ``{"data": [[row, score], ...]}``, a JSON list, or CSV with one score a line.
    """
    media_type = content_type.split(";")[0].strip().lower()
    try:
        if media_type in ("text/csv", "text/plain"):
            values: Any = [float(v) for v in body.decode("utf-8").split()]
        else:
            data = orjson.loads(body)
            if isinstance(data, dict) and "predictions" in data:
                values = data["predictions"]
            elif isinstance(data, dict) and "data" in data:
                values = [row[1] for row in data["data"]]
            else:
                values = data
        scores = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, KeyError, IndexError, orjson.JSONDecodeError) as exc:
        raise _Undecodable(f"the output cannot be parsed: {exc}") from None
    if scores.ndim != 1:
        raise _Undecodable("the output is not one score per row")
    return scores


def _frame(
    schema: FeatureSchema,
    matrices: list[np.ndarray],
    predictions: list[np.ndarray],
    times: list[np.ndarray],
) -> pd.DataFrame:
    names = schema.feature_names
    if not matrices:
        frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in names})
        frame[PREDICTION] = pd.Series(dtype="float64")
        frame[INFERENCE_TIME] = pd.Series(dtype="datetime64[ns, UTC]")
        return frame
    frame = pd.DataFrame(np.vstack(matrices).astype(np.float64), columns=names)
    frame[PREDICTION] = np.concatenate(predictions)
    frame[INFERENCE_TIME] = pd.to_datetime(np.concatenate(times)).tz_localize(UTC)
    return frame
