"""The app client: batching under the payload limit, retries, and the local endpoint."""

import io

import boto3
import numpy as np
import orjson
import pandas as pd
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from inference.client import (
    EndpointClient,
    EndpointInvokeError,
    RetryPolicy,
    csv_lines,
)
from inference.model import load_model
from tests.inference.servers import running_server


def runtime_client(url="http://127.0.0.1:1"):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",  # noqa: S106
    )


def test_scores_a_frame_on_the_local_endpoint_in_batches_under_the_limit(model_dir):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"x2": rng.normal(size=400), "x1": rng.normal(size=400), "other": "a"},
        index=pd.RangeIndex(100, 500),
    )
    frame.loc[105, "x2"] = np.nan  # a missing value travels as an empty field
    expected = load_model(model_dir).predict(
        frame[["x1", "x2"]].to_numpy(dtype=np.float32)
    )
    with running_server(model_dir, workers=1) as server:
        runtime = runtime_client(server.url)
        bodies = []
        runtime.meta.events.register(
            "before-send.sagemaker-runtime.InvokeEndpoint",
            lambda request, **_: bodies.append(len(request.body)),
        )
        client = EndpointClient(
            runtime, "churn-endpoint", ["x1", "x2"], max_payload_bytes=2_000
        )
        scores = client.predict_frame(frame)
        array = client.predict(frame[["x1", "x2"]].to_numpy())
    assert list(scores.index) == list(frame.index)
    np.testing.assert_allclose(scores["score"].to_numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(array, expected, rtol=1e-6)
    assert len(bodies) > 2 and max(bodies) <= 2_000


def test_a_bad_row_is_not_retried_and_is_named(model_dir):
    with running_server(model_dir, workers=1) as server:
        client = EndpointClient(
            runtime_client(server.url), "churn-endpoint", sleep=_no_sleep
        )
        with pytest.raises(EndpointInvokeError, match="rows 0-1: ModelError: row 1"):
            client.predict([[1.0, 2.0], [np.inf, 0.0]])


def _no_sleep(_seconds):
    raise AssertionError("a 4xx must not be retried")


def _ok(n):
    body = orjson.dumps({"predictions": [0.5] * n})
    return {
        "Body": StreamingBody(io.BytesIO(body), len(body)),
        "ContentType": "application/json",
    }


def test_throttling_and_5xx_are_retried_with_growing_backoff():
    runtime = runtime_client()
    slept = []
    client = EndpointClient(
        runtime,
        "ep",
        retry=RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0),
        sleep=slept.append,
        seed=0,
    )
    with Stubber(runtime) as stub:
        stub.add_client_error(
            "invoke_endpoint", "ThrottlingException", http_status_code=400
        )
        stub.add_client_error(
            "invoke_endpoint", "ServiceUnavailable", http_status_code=503
        )
        stub.add_client_error(
            "invoke_endpoint",
            "ModelError",
            http_status_code=424,
            response_meta={},
            modeled_fields={"OriginalStatusCode": 500},
        )
        stub.add_response("invoke_endpoint", _ok(2))
        scores = client.predict([[1, 2], [3, 4]])
        stub.assert_no_pending_responses()
    assert scores.tolist() == [0.5, 0.5]
    assert len(slept) == 3
    assert all(0 <= s <= cap for s, cap in zip(slept, [1.0, 2.0, 3.0], strict=True))


def test_retries_give_up_after_max_attempts():
    runtime = runtime_client()
    client = EndpointClient(
        runtime, "ep", retry=RetryPolicy(max_attempts=2), sleep=lambda _: None
    )
    with Stubber(runtime) as stub:
        for _ in range(2):
            stub.add_client_error(
                "invoke_endpoint", "ThrottlingException", http_status_code=400
            )
        with pytest.raises(EndpointInvokeError, match="after 2 attempts"):
            client.predict([[1, 2]])


def test_an_answer_with_the_wrong_number_of_scores_is_refused():
    runtime = runtime_client()
    client = EndpointClient(runtime, "ep")
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", _ok(1))
        with pytest.raises(EndpointInvokeError, match="1 scores for 2 rows"):
            client.predict([[1, 2], [3, 4]])


def test_a_row_over_the_limit_is_refused_before_sending():
    client = EndpointClient(runtime_client(), "ep", max_payload_bytes=64)
    with pytest.raises(EndpointInvokeError, match="row 0 alone"):
        client.predict([list(range(40))])


def test_concurrent_batches_come_back_in_input_order(model_dir):
    rows = np.random.default_rng(2).normal(size=(1_000, 2))
    expected = load_model(model_dir).predict(rows.astype(np.float32))
    with running_server(model_dir, workers=2) as server:
        runtime = runtime_client(server.url)
        bodies = []
        runtime.meta.events.register(
            "before-send.sagemaker-runtime.InvokeEndpoint",
            lambda request, **_: bodies.append(request.body.count(b"\n")),
        )
        client = EndpointClient(runtime, "ep", max_rows=64, concurrency=4)
        scores = client.predict(rows)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert max(bodies) == 64 and sum(bodies) == 1_000
    assert client.requests_sent == len(bodies) == 16


def test_a_failing_batch_among_concurrent_ones_is_named():
    runtime = runtime_client()
    client = EndpointClient(runtime, "ep", max_rows=1, concurrency=3)

    def fake_invoke(**kwargs):
        body = kwargs["Body"]
        if body.startswith(b"13,"):
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ModelError", "Message": "row 0: bad"},
                 "ResponseMetadata": {"HTTPStatusCode": 424},
                 "OriginalStatusCode": 400},
                "InvokeEndpoint",
            )  # fmt: skip
        return _ok(1)

    runtime.invoke_endpoint = fake_invoke
    with pytest.raises(EndpointInvokeError, match="rows 13-13: ModelError"):
        client.predict([[i, 0] for i in range(40)])


def test_batches_stay_under_the_payload_limit_and_cover_every_row():
    matrix = np.random.default_rng(0).normal(size=(20_000, 19)).astype(np.float32)
    runtime = runtime_client()
    sizes, counts = [], []

    def fake_invoke(**kwargs):
        sizes.append(len(kwargs["Body"]))
        counts.append(kwargs["Body"].count(b"\n"))
        return _ok(counts[-1])

    runtime.invoke_endpoint = fake_invoke
    limit = 100_000
    scores = EndpointClient(runtime, "ep", max_payload_bytes=limit).predict(matrix)
    assert len(scores) == len(matrix) == sum(counts)
    assert max(sizes) <= limit and len(sizes) > 2


def test_csv_rows_keep_values_and_leave_missing_ones_empty():
    matrix = np.array([[1.5, np.nan, -2.0], [0.1, 3.0, 1e-5]], dtype=np.float32)
    lines = csv_lines(matrix)
    parsed = [line.decode().rstrip("\n").split(",") for line in lines]
    assert len(parsed) == 2 and parsed[0][1] == ""
    # shortest digits that round-trip the float32 value exactly
    assert np.array(parsed[1], dtype=np.float32).tolist() == matrix[1].tolist()


def test_non_numeric_features_are_refused_before_sending():
    client = EndpointClient(runtime_client(), "ep", feature_names=["x1"])
    with pytest.raises(ValueError, match="numeric"):
        client.predict(pd.DataFrame({"x1": ["a", "b"]}))


def test_one_retry_layer_the_clients_we_make_leave_retrying_to_the_loop(
    caplog, local_config
):
    from botocore.config import Config

    from inference.client import botocore_attempts
    from stack.endpoints import local_runtime_client
    from stack.resources import AwsClients

    assert botocore_attempts(local_runtime_client("http://127.0.0.1:1")) == 1
    aws = AwsClients(local_config).client("sagemaker-runtime")
    assert botocore_attempts(aws) == 1
    assert botocore_attempts(AwsClients(local_config).client("sagemaker")) > 1
    with caplog.at_level("WARNING", logger="inference.client"):
        EndpointClient(local_runtime_client("http://127.0.0.1:1"), "e")
    assert not caplog.records
    # an app's client with botocore's default retries: each attempt would be three
    default = runtime_client()
    assert botocore_attempts(default) == 3
    with caplog.at_level("WARNING", logger="inference.client"):
        EndpointClient(default, "e", retry=RetryPolicy(max_attempts=4))
    assert "up to 12 times" in caplog.text
    legacy = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",  # noqa: S106
        config=Config(retries={"mode": "legacy", "max_attempts": 2}),
    )
    assert botocore_attempts(legacy) == 3
