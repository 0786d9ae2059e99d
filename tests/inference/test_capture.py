"""Data capture: the records SageMaker's endpoint data capture writes, locally."""

import base64
import logging
import re
import tarfile
import time
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest

from inference.app import ScoringApp
from inference.capture import CaptureSettings, CaptureWriter, encode_body
from inference.model import load_model
from stack.endpoints import EndpointError, LocalEndpoints
from stack.objectstore import LocalObjectStore, S3ObjectStore
from stack.registry import LocalModelRegistry
from tests.conftest import free_port
from tests.inference.test_server import call

CONFIG = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://bucket/datacapture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {
        "CsvContentTypes": ["text/csv"],
        "JsonContentTypes": ["application/json"],
    },
}
# <prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-SSS>-<uuid4>.jsonl
KEY = re.compile(
    r"^datacapture/ep/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"\.jsonl$"
)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


def settings(tmp_path, **config):
    return CaptureSettings.from_config(
        {**CONFIG, **config}, tmp_path / "capture", "ep", "AllTraffic"
    )


def events(folder):
    """Every captured record under ``folder``, with the file it is in."""
    return [
        (path, orjson.loads(line))
        for path in sorted(folder.rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_the_config_decides_what_is_captured(tmp_path):
    both = settings(tmp_path)
    assert (both.capture_input, both.capture_output) == (True, True)
    assert both.csv_types == {"text/csv"} and both.sampling_percent == 100
    only_input = settings(tmp_path, CaptureOptions=[{"CaptureMode": "Input"}])
    assert (only_input.capture_input, only_input.capture_output) == (True, False)
    combined = settings(tmp_path, CaptureOptions=[{"CaptureMode": "InputAndOutput"}])
    assert (combined.capture_input, combined.capture_output) == (True, True)
    assert settings(tmp_path, EnableCapture=False) is None
    assert settings(tmp_path, InitialSamplingPercentage=0) is None


def test_bodies_are_text_for_the_listed_types_and_base64_otherwise(tmp_path):
    s = settings(tmp_path)
    assert encode_body(b"1,2\n", "text/csv", s) == ("1,2\n", "CSV")
    # matched without the parameters, as SageMaker records "text/csv; charset=utf-8"
    assert encode_body(b"0.5\n", "text/csv; charset=utf-8", s) == ("0.5\n", "CSV")
    assert encode_body(b'{"a": 1}', "Application/JSON", s) == ('{"a": 1}', "JSON")
    for body, content_type in [
        (b'{"instances": [[1, 2]]}', "application/jsonlines"),  # not listed
        (b"1,2\n", ""),  # no content type
        (b"\xff\xfe1,2", "text/csv"),  # listed, but not text
    ]:
        data, encoding = encode_body(body, content_type, s)
        assert encoding == "BASE64" and base64.b64decode(data) == body
    # no CaptureContentTypeHeader at all: everything is BASE64, as documented
    bare = settings(tmp_path, CaptureContentTypeHeader=None)
    assert encode_body(b"1,2\n", "text/csv", bare)[1] == "BASE64"


def test_files_rotate_per_hour_and_each_writer_appends_to_its_own(tmp_path):
    stamp = datetime(2026, 11, 24, 10, 59, 59, 500000, tzinfo=UTC).timestamp()
    times = iter([stamp, stamp + 0.75, stamp + 0.8])
    writer = CaptureWriter(
        settings(tmp_path, CaptureOptions=[{"CaptureMode": "Input"}]),
        clock=lambda: next(times),
    )
    writer.record(b"1,2\n", "text/csv", b"", "")
    writer.record(b"3,4\n", "text/csv", b"", "")
    assert writer.flush() == 2
    writer.record(b"5,6\n", "text/csv", b"", "")  # same hour: the same file
    assert writer.flush() == 1
    writer.close()
    found = events(tmp_path / "capture")
    names = [p.relative_to(tmp_path / "capture").as_posix() for p, _ in found]
    assert names[0].startswith("ep/AllTraffic/2026/11/24/10/59-59-500-")
    assert names[1].startswith("ep/AllTraffic/2026/11/24/11/00-00-250-")
    assert names[2] == names[1]
    assert [e["captureData"]["endpointInput"]["data"] for _, e in found] == [
        "1,2\n",
        "3,4\n",
        "5,6\n",
    ]
    assert [e["eventMetadata"]["inferenceTime"] for _, e in found] == [
        "2026-11-24T10:59:59Z",
        "2026-11-24T11:00:00Z",
        "2026-11-24T11:00:00Z",
    ]
    assert all("endpointOutput" not in e["captureData"] for _, e in found)
    assert writer.captured == 3 and writer.failed == 0


def test_close_writes_what_is_queued(tmp_path):
    writer = CaptureWriter(settings(tmp_path), flush_seconds=3600).start()
    writer.record(b"1,2\n", "text/csv", b"0.5\n", "text/csv")
    time.sleep(0.05)
    assert events(tmp_path / "capture") == []  # not yet: no size or time trigger
    writer.close()  # what a worker does on SIGTERM
    assert len(events(tmp_path / "capture")) == 1


def test_about_a_megabyte_waiting_wakes_the_writer(tmp_path):
    writer = CaptureWriter(settings(tmp_path), flush_seconds=3600, flush_bytes=1000)
    writer.start()
    for _ in range(2):  # 800 bytes each: the second crosses the threshold
        writer.record(b"1,2\n" * 100, "text/csv", b"0.5\n" * 100, "text/csv")
    deadline = time.monotonic() + 10
    while writer.captured < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.captured == 2
    writer.close()


def test_a_full_backlog_drops_events_instead_of_growing(tmp_path):
    writer = CaptureWriter(settings(tmp_path), max_backlog_bytes=100)
    taken = [writer.record(b"x" * 40, "text/csv", b"", "text/csv") for _ in range(4)]
    assert taken == [True, True, False, False] and writer.dropped == 2
    assert writer.flush() == 2
    assert writer.record(b"x" * 40, "text/csv", b"", "text/csv")  # room again


def test_sampling_captures_about_the_configured_share(tmp_path):
    writer = CaptureWriter(settings(tmp_path, InitialSamplingPercentage=30))
    n = 4000
    taken = sum(
        writer.record(b"1,2\n", "text/csv", b"0.5\n", "text/csv") for _ in range(n)
    )
    # Binomial(4000, 0.3): mean 1200, sd 29; 6 sd either side fails once in 10^9 runs
    assert 1200 - 175 < taken < 1200 + 175
    assert writer.flush() == taken
    assert len(events(tmp_path / "capture")) == taken


def test_a_failing_destination_fails_no_prediction_and_is_logged_once(
    tmp_path, model_dir, caplog
):
    blocker = tmp_path / "capture"
    blocker.write_text("a file where the capture folder should be")
    writer = CaptureWriter(settings(tmp_path))
    app = ScoringApp(load_model(model_dir), capture=writer)
    headers = [("content-type", "text/csv")]
    with caplog.at_level(logging.WARNING, logger="inference.capture"):
        for _ in range(3):
            status, _, body = call(app, "POST", "/invocations", b"1,2\n", headers)
            assert status == 200 and len(orjson.loads(body)["predictions"]) == 1
            writer.flush()
    assert (writer.captured, writer.failed) == (0, 3)
    assert len([r for r in caplog.records if "data capture" in r.message]) == 1


def test_requests_the_app_refuses_are_not_captured(tmp_path, model_dir):
    writer = CaptureWriter(settings(tmp_path))
    app = ScoringApp(load_model(model_dir), capture=writer)
    assert (
        call(app, "POST", "/invocations", b"1,2,3\n", [("content-type", "text/csv")])[0]
        == 400
    )
    assert writer.flush() == 0


@pytest.fixture
def endpoints(tmp_path, model_dir):
    store = LocalObjectStore(tmp_path / "s3")
    registry = LocalModelRegistry(tmp_path / "registry", "us-east-1")
    # the workers write only when they stop: what is on disk afterwards was written
    # by the graceful shutdown
    deployer = LocalEndpoints(
        tmp_path / "endpoints",
        store,
        registry,
        port=free_port(),
        workers=2,
        capture_flush_seconds=3600,
    )
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in model_dir.iterdir():
            tar.add(path, arcname=path.name)
    store.upload_file(archive, "s3://bucket/model.tar.gz")
    deployer.create_model(
        {
            "ModelName": "m",
            "PrimaryContainer": {"ModelDataUrl": "s3://bucket/model.tar.gz"},
        }
    )
    yield deployer
    deployer.stop("ep")


def deploy(endpoints, config_name, capture):
    request = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m"}],
    }
    if capture:
        request["DataCaptureConfig"] = capture
    endpoints.create_endpoint_config(request)
    return endpoints.create_or_update_endpoint(
        {"EndpointName": "ep", "EndpointConfigName": config_name}
    )


def post(url, body, content_type):
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.headers["Content-Type"], response.read()


def test_a_local_endpoint_captures_what_it_serves_as_sagemaker_does(
    endpoints, tmp_path
):
    info = deploy(endpoints, "with-capture", CONFIG)
    folder = tmp_path / "s3" / "bucket" / "datacapture"
    runtime = endpoints.runtime_client()
    csv_body = b"0.25,-1.5\n2,0.125\n,3\n"
    answer = runtime.invoke_endpoint(
        EndpointName="ep",
        Body=csv_body,
        ContentType="text/csv",
        Accept="text/csv",
        InferenceId="order-17",
    )
    csv_scores = answer["Body"].read()
    runtime.close()  # no keep-alive connection for the workers to drain when they stop
    snowflake_body = b'{"data": [[0, 1.5, -2.0], [1, null, 0.5]]}'
    snowflake_type, snowflake_scores = post(
        info.url, snowflake_body, "application/json"
    )
    lines_body = b'{"x1": 1, "x2": 2}\n{"x1": 3, "x2": 4}\n'  # a record a line
    lines_type, lines_scores = post(info.url, lines_body, "application/jsonlines")

    assert events(folder) == []  # queued in the workers
    more = [post(info.url, f"{i},0\n".encode(), "text/csv") for i in range(20)]
    endpoints.stop("ep")  # SIGTERM: each worker writes what it holds, then exits
    found = events(folder)
    assert len(found) == 23

    keys = {p.relative_to(tmp_path / "s3" / "bucket").as_posix() for p, _ in found}
    assert 1 <= len(keys) <= 2 and all(KEY.match(k) for k in keys)  # one per worker
    by_body = {e["captureData"]["endpointInput"]["data"]: e for _, e in found}
    for i, (_, scores) in enumerate(more):
        assert by_body[f"{i},0\n"]["captureData"]["endpointOutput"]["data"] == (
            scores.decode()
        )
    by_input = {
        e["captureData"]["endpointInput"]["observedContentType"]: e for _, e in found
    }
    csv_event = by_body[csv_body.decode()]
    assert csv_event["eventVersion"] == "0"
    assert set(csv_event) == {"captureData", "eventMetadata", "eventVersion"}
    assert csv_event["captureData"] == {
        "endpointInput": {
            "observedContentType": "text/csv",
            "mode": "INPUT",
            "data": csv_body.decode(),
            "encoding": "CSV",
        },
        "endpointOutput": {
            "observedContentType": "text/csv",
            "mode": "OUTPUT",
            "data": csv_scores.decode(),
            "encoding": "CSV",
        },
    }
    metadata = csv_event["eventMetadata"]
    assert UUID4.match(metadata["eventId"]) and metadata["inferenceId"] == "order-17"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", metadata["inferenceTime"])

    snowflake = by_input["application/json"]["captureData"]
    assert snowflake["endpointInput"]["data"] == snowflake_body.decode()
    assert snowflake["endpointInput"]["encoding"] == "JSON"
    assert snowflake["endpointOutput"] == {
        "observedContentType": snowflake_type,
        "mode": "OUTPUT",
        "data": snowflake_scores.decode(),
        "encoding": "JSON",
    }
    jsonlines = by_input["application/jsonlines"]["captureData"]["endpointInput"]
    assert jsonlines["encoding"] == "BASE64"
    assert base64.b64decode(jsonlines["data"]) == lines_body
    assert lines_type == "application/json" and lines_scores


def test_capture_on_a_local_endpoint_needs_the_local_object_store(tmp_path):
    """Workers write the capture as files: with S3 as the store the deploy is refused
    before anything starts, naming the setting.
    """
    deployer = LocalEndpoints(
        tmp_path,
        S3ObjectStore(client=None),
        LocalModelRegistry(tmp_path / "registry", "us-east-1"),
        port=free_port(),
    )
    deployer.create_model(
        {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "s3://bkt/m.tar.gz"}}
    )
    with pytest.raises(EndpointError, match="deployment.data_capture_s3_uri"):
        deploy(deployer, "c", CONFIG)
    assert not (tmp_path / "servers").exists()
