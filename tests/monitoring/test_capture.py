"""Reading data capture back as scored rows."""

import base64
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd

from features import load_feature_set
from inference.capture import CaptureSettings, CaptureWriter
from monitoring.capture import read_capture
from stack.objectstore import LocalObjectStore

SCHEMA = load_feature_set("churn").schema
NAMES = SCHEMA.feature_names
PREFIX = "s3://bucket/datacapture"
CONFIG = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": PREFIX,
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {
        "CsvContentTypes": ["text/csv"],
        "JsonContentTypes": ["application/json"],
    },
}
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def rows(n, seed):
    """Feature rows of values float32 holds exactly, NaN in some nullable columns."""
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 400, size=(n, len(NAMES))) / 4.0
    nullable = [j for j, f in enumerate(SCHEMA.features) if f.nullable]
    matrix[rng.random(n) < 0.5, nullable[0]] = np.nan
    return matrix


def csv(matrix):
    return "".join(
        ",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n"
        for row in matrix
    ).encode()


def json_values(matrix):
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


class Recorder:
    """Writes capture files as the endpoint does, at chosen inference times."""

    def __init__(self, root):
        self.now = T0.timestamp()
        self.writer = CaptureWriter(
            CaptureSettings.from_config(
                CONFIG, root / "bucket" / "datacapture", "ep", "AllTraffic"
            ),
            clock=lambda: self.now,
        )

    def record(self, when, input_body, input_type, output_body, output_type):
        self.now = when.timestamp()
        self.writer.record(input_body, input_type, output_body, output_type)
        self.writer.flush()


class CountingStore(LocalObjectStore):
    def __init__(self, root):
        super().__init__(root)
        self.listed = []

    def list(self, prefix_uri):
        self.listed.append(prefix_uri)
        return super().list(prefix_uri)


def test_captured_requests_come_back_as_the_rows_and_scores_sent(tmp_path):
    store = CountingStore(tmp_path)
    recorder = Recorder(tmp_path)
    a, b, c, d = rows(3, 1), rows(2, 2), rows(2, 3), rows(4, 4)
    score = np.round(np.random.default_rng(5).random(11), 6)
    sa, sb, sc, sd = score[:3], score[3:5], score[5:7], score[7:]

    # before the window: not read
    recorder.record(
        T0 - timedelta(minutes=1), csv(a), "text/csv", b"0.5\n" * 3, "text/csv"
    )
    # CSV in, CSV out
    t1 = T0 + timedelta(minutes=15)
    out = "".join(f"{s:.6f}\n" for s in sa).encode()
    recorder.record(t1, csv(a), "text/csv", out, "text/csv; charset=utf-8")
    # Snowflake's external function format in and out
    t2 = T0 + timedelta(minutes=45)
    body = orjson.dumps({"data": [[i, *r] for i, r in enumerate(json_values(b))]})
    out = orjson.dumps({"data": [[i, float(s)] for i, s in enumerate(sb)]})
    recorder.record(t2, body, "application/json", out, "application/json")
    # records as BASE64 (a JSON type the config does not list), in the next hour
    t3 = T0 + timedelta(hours=1, minutes=20)
    body = b"\n".join(
        orjson.dumps(dict(zip(NAMES, r, strict=True))) for r in json_values(c)
    )  # JSON Lines: one record per line
    out = orjson.dumps({"predictions": sc.tolist()})
    recorder.record(t3, body, "application/jsonlines", out, "application/json")
    # {"columns", "data"} in, predictions out
    t4 = T0 + timedelta(hours=1, minutes=59, seconds=59)
    body = orjson.dumps({"columns": NAMES, "data": json_values(d)})
    out = orjson.dumps({"predictions": sd.tolist()})
    recorder.record(t4, body, "application/json", out, "application/json")
    # undecodable: a row of the wrong width, and scores that do not match the rows
    recorder.record(t4, b"1,2,3\n", "text/csv", b"0.1\n", "text/csv")
    recorder.record(t4, csv(a), "text/csv", b"0.1\n", "text/csv")
    # at the end of the window: not read
    recorder.record(
        T0 + timedelta(hours=2), csv(a), "text/csv", b"0.5\n" * 3, "text/csv"
    )
    recorder.writer.close()

    hour_10 = next(
        (tmp_path / "bucket/datacapture/ep/AllTraffic/2026/11/24/10").iterdir()
    )
    with hour_10.open("ab") as f:
        f.write(b"{not json}\n")  # a damaged line: counted
        f.write(b'{"captureData": {')  # a line still being written: ignored
    # an event inside the window in an hour folder outside it is never listed
    stray = tmp_path / "bucket/datacapture/ep/AllTraffic/2026/11/24/09/x.jsonl"
    stray.write_bytes(hour_10.read_bytes().splitlines()[0] + b"\n")

    frame = read_capture(store, PREFIX, "ep", T0, T0 + timedelta(hours=2))

    assert list(frame.columns) == [*NAMES, "prediction", "inference_time"]
    assert all(frame[name].dtype == np.float64 for name in [*NAMES, "prediction"])
    expected = np.vstack([a, b, c, d])
    np.testing.assert_array_equal(frame[NAMES].to_numpy(), expected)
    np.testing.assert_allclose(frame["prediction"], np.concatenate([sa, sb, sc, sd]))
    assert frame["inference_time"].tolist() == [
        pd.Timestamp(t)
        for t, n in [(t1, 3), (t2, 2), (t3, 2), (t4, 4)]
        for _ in range(n)
    ]
    assert frame.attrs["undecodable"] == 3
    assert frame.attrs["events"] == 6
    assert store.listed == [
        f"{PREFIX}/ep/AllTraffic/2026/11/24/10/",
        f"{PREFIX}/ep/AllTraffic/2026/11/24/11/",
    ]
    # the BASE64 event really was written as BASE64
    hour_11 = (tmp_path / "bucket/datacapture/ep/AllTraffic/2026/11/24/11").iterdir()
    first = orjson.loads(next(hour_11).read_bytes().splitlines()[0])
    captured = first["captureData"]["endpointInput"]
    assert captured["encoding"] == "BASE64"
    first_line = base64.b64decode(captured["data"]).splitlines()[0]
    assert orjson.loads(first_line)["tenure_days"] == c[0, 0]


def test_a_window_without_capture_is_an_empty_frame_with_the_columns(tmp_path):
    start = datetime(2026, 11, 24, 10, 30)  # naive: taken as UTC
    frame = read_capture(
        LocalObjectStore(tmp_path), PREFIX, "ep", start, start + timedelta(hours=3)
    )
    assert frame.empty and list(frame.columns) == [
        *NAMES,
        "prediction",
        "inference_time",
    ]
    assert str(frame["inference_time"].dtype) == "datetime64[ns, UTC]"
    assert frame.attrs["undecodable"] == 0


def test_an_output_only_capture_is_counted_not_read(tmp_path):
    root = tmp_path / "bucket" / "datacapture"
    writer = CaptureWriter(
        CaptureSettings.from_config(
            {**CONFIG, "CaptureOptions": [{"CaptureMode": "Output"}]},
            root,
            "ep",
            "AllTraffic",
        ),
        clock=lambda: T0.timestamp(),
    )
    writer.record(csv(rows(2, 0)), "text/csv", b"0.1\n0.2\n", "text/csv")
    writer.close()
    frame = read_capture(
        LocalObjectStore(tmp_path), PREFIX, "ep", T0, T0 + timedelta(hours=1)
    )
    assert frame.empty and frame.attrs["undecodable"] == 1


class SweepingStore(LocalObjectStore):
    """Lists, then the first listed file goes (the capture bound's sweep, or S3's
    lifecycle rule, between the listing and the read).
    """

    swept = False

    def list(self, prefix_uri):
        found = super().list(prefix_uri)
        if found and not self.swept:
            self.path_of(found[0]).unlink()
            self.swept = True
        return found


def test_a_file_swept_between_the_listing_and_the_read_is_skipped(tmp_path):
    recorder = Recorder(tmp_path)
    early, late = rows(2, 7), rows(3, 8)
    recorder.record(
        T0 + timedelta(minutes=5), csv(early), "text/csv", b"0.1\n0.2\n", "text/csv"
    )
    recorder.record(
        T0 + timedelta(hours=1, minutes=5),
        csv(late), "text/csv", b"0.3\n0.4\n0.5\n", "text/csv",
    )  # fmt: skip
    recorder.writer.close()
    frame = read_capture(
        SweepingStore(tmp_path), PREFIX, "ep", T0, T0 + timedelta(hours=2)
    )
    np.testing.assert_array_equal(frame[NAMES].to_numpy(), late)
    np.testing.assert_allclose(frame["prediction"], [0.3, 0.4, 0.5])
