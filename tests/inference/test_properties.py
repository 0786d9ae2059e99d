"""Property-based tests (hypothesis): whatever arrives, the answer is a 2xx or a 4xx,
never a 5xx, and the server keeps serving.
"""

import json
import socket

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.app import ScoringApp
from inference.model import load_model
from tests.inference.servers import running_server
from tests.inference.test_server import call

KEYS = st.sampled_from(["instances", "data", "columns", "x1", "x2", "a"]) | st.text(
    max_size=5
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["1", "nan", "inf", "-1e39", "", " 2 "])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=20,
)
CSV_CELLS = st.sampled_from(
    ["1", "2.5", "", "x", "nan", "1e39", '"', '"1"', "\x00", " "]
)
CSV_BODIES = st.lists(st.lists(CSV_CELLS, max_size=4), max_size=4).map(
    lambda rows: "\n".join(",".join(r) for r in rows).encode()
)
BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    CSV_BODIES,
    st.binary(max_size=64),
)
CONTENT_TYPES = st.sampled_from(
    ["text/csv", "application/json", "", "text/plain", "x/y", "application/json; q=1"]
)
ACCEPTS = st.sampled_from(["", "*/*", "text/csv", "application/json", "image/png", ","])
FINE = {200, 400, 406, 413, 415}


@pytest.fixture(scope="module")
def app(model_dir):
    return ScoringApp(load_model(model_dir))


@settings(
    max_examples=1500,
    deadline=None,
    database=None,  # nothing written to the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=BODIES, content_type=CONTENT_TYPES, accept=ACCEPTS)
def test_any_body_gets_2xx_or_4xx(app, body, content_type, accept):
    status, headers, payload = call(
        app,
        "POST",
        "/invocations",
        body,
        [("content-type", content_type), ("accept", accept)],
    )
    assert status in FINE, (status, payload)
    if status == 200 and headers[b"content-type"] == b"application/json":
        answer = orjson.loads(payload)
        assert "predictions" in answer or "data" in answer
    elif status != 200:
        assert orjson.loads(payload)["message"]


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, workers=1) as running:
        yield running


HTTP_GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=200),
    st.tuples(st.sampled_from([b"-1", b"abc", b"99999999999", b"3"]), BODIES).map(
        lambda t: (
            b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv"
            b"\r\nContent-Length: " + t[0] + b"\r\n\r\n" + t[1]
        )
    ),
    BODIES.map(
        lambda b: (
            b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: t\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n"
        )
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written to the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=HTTP_GARBAGE)
def test_malformed_http_never_gets_a_5xx_and_the_server_stays_up(server, raw):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    if reply:  # the server may also just close a connection it cannot parse
        status = int(reply.split(b" ", 2)[1])
        assert status < 500, reply[:300]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 200")
