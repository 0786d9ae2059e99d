import asyncio

import boto3
import numpy as np
import orjson
import pytest

from features import FeatureSchema
from inference.app import ScoringApp
from inference.model import load_model
from tests.inference.servers import running_server

SCHEMA = FeatureSchema.from_dict(
    {
        "entity_id": "id",
        "label": "y",
        "features": [{"name": "x1"}, {"name": "x2"}],
    }
)


def call(app, method, path, body=b"", headers=()):
    """Drive the ASGI app directly; returns (status, headers, body)."""
    messages = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0)

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(app(scope, receive, send))
    start = messages[0]
    return start["status"], dict(start["headers"]), messages[1]["body"]


def test_ping_and_invocations(model_dir):
    app = ScoringApp(load_model(model_dir))
    assert call(app, "GET", "/ping")[0] == 200
    status, headers, body = call(
        app, "POST", "/invocations", b"2,0\n-2,0\n", [("content-type", "text/csv")]
    )
    assert status == 200
    high, low = orjson.loads(body)["predictions"]
    assert high > 0.5 > low
    status, _, body = call(
        app,
        "POST",
        "/endpoints/churn/invocations",
        b"2,0\n",
        [("content-type", "text/csv"), ("accept", "text/csv")],
    )
    assert status == 200 and body.decode().strip().startswith("0.")


@pytest.mark.parametrize(
    ("method", "path", "body", "ctype", "status"),
    [
        ("POST", "/invocations", b"1,2,3\n", "text/csv", 400),
        ("POST", "/invocations", b"", "text/csv", 400),
        ("POST", "/invocations", b"1,2", "image/png", 415),
        ("GET", "/invocations", b"", "text/csv", 405),
        ("POST", "/nowhere", b"", "text/csv", 404),
    ],
)
def test_bad_requests_get_4xx_and_the_app_keeps_serving(
    model_dir, method, path, body, ctype, status
):
    app = ScoringApp(load_model(model_dir))
    got, _, payload = call(app, method, path, body, [("content-type", ctype)])
    assert got == status
    assert orjson.loads(payload)["error"]
    assert (
        call(app, "POST", "/invocations", b"1,2\n", [("content-type", "text/csv")])[0]
        == 200
    )


def test_declared_oversized_bodies_are_refused_before_reading(model_dir):
    app = ScoringApp(load_model(model_dir))
    status, _, _ = call(
        app,
        "POST",
        "/invocations",
        b"1,2\n",
        [("content-type", "text/csv"), ("content-length", str(7 * 2**20))],
    )
    assert status == 413


def test_the_real_server_answers_boto3_sagemaker_runtime(model_dir):
    with running_server(model_dir, workers=1) as server:
        runtime = boto3.client(
            "sagemaker-runtime",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        response = runtime.invoke_endpoint(
            EndpointName="churn-endpoint",
            ContentType="application/json",
            Body=orjson.dumps({"data": [[0, 2.0, 0.0], [1, -2.0, 0.0]]}),
        )
        rows = orjson.loads(response["Body"].read())["data"]
        assert [r[0] for r in rows] == [0, 1] and rows[0][1] > rows[1][1]
        # the server's scores are the calibrated predictions, to the last bit
        expected = load_model(model_dir).predict(np.array([[2.0, 0.0], [-2.0, 0.0]]))
        assert [r[1] for r in rows] == expected.tolist()


def test_the_app_answers_the_calibrated_predictions(model_dir):
    model = load_model(model_dir)
    rows = np.random.default_rng(11).normal(size=(50, 2)).round(3)
    body = "\n".join(f"{a},{b}" for a, b in rows).encode()
    status, _, payload = call(
        ScoringApp(model),
        "POST",
        "/invocations",
        body,
        [("content-type", "text/csv")],
    )
    assert status == 200
    served = np.array(orjson.loads(payload)["predictions"])
    np.testing.assert_array_equal(served, model.predict(rows))
    assert not np.allclose(served, model.predict_raw(rows))
