"""The worker's own HTTP/1.1 layer (``inference.worker.HttpServer``) on a real server:
keep-alive, pipelining, chunked bodies, ``Expect: 100-continue``, size limits,
malformed requests, HTTP/1.0, timeouts; after every refusal the server serves on.
"""

import socket
import time

import orjson
import pytest

from tests.inference.servers import running_server

READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(
        model_dir, workers=1, extra=("--read-timeout", str(READ_TIMEOUT))
    ) as running:
        yield running


def post(body, content_type=b"text/csv", path=b"/invocations", extra=b""):
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n%sContent-Length: %d"
        b"\r\n\r\n" % (path, content_type, extra, len(body))
    ) + body


def _fail(data):
    raise AssertionError(f"closed in the middle of a head: {data[:200]!r}")


class Conn:
    """A client connection that keeps bytes read past one reply for the next."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buffer:
                    _fail(self.buffer)
                return None
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "closed in the middle of a body"
            rest += chunk
        self.buffer = rest[length:]
        return status, headers, rest[:length]

    def closed(self):
        """True once the server has closed the connection (and nothing is left)."""
        return not self.buffer and self.sock.recv(65536) == b""

    def close(self):
        self.sock.close()


@pytest.fixture
def conn(server):
    connection = Conn(server.port)
    yield connection
    connection.close()


def assert_serving(server):
    fresh = Conn(server.port)
    try:
        fresh.send(post(b"2,0\n"))
        status, _, body = fresh.reply()
        assert status == 200 and orjson.loads(body)["predictions"][0] > 0.5
    finally:
        fresh.close()


def test_keep_alive_answers_many_requests_on_one_connection(conn):
    for _ in range(20):
        conn.send(post(b"2,0\n-2,0\n"))
        status, headers, body = conn.reply()
        assert status == 200
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"x-amzn-invoked-production-variant"] == b"AllTraffic"
        assert b"connection" not in headers
        high, low = orjson.loads(body)["predictions"]
        assert high > 0.5 > low


def test_pipelined_requests_are_answered_in_order(conn):
    bodies = [b"2,0\n", b"1,2,3\n", b"-2,0\n", b"2,0\n-2,0\n"]
    conn.send(b"".join(post(b) for b in bodies) + b"GET /ping HTTP/1.1\r\n\r\n")
    answers = [conn.reply() for _ in range(len(bodies) + 1)]
    assert [a[0] for a in answers] == [200, 400, 200, 200, 200]
    assert len(orjson.loads(answers[3][2])["predictions"]) == 2
    assert answers[4][2] == b""


def test_a_chunked_body_is_read_whole(conn):
    body = b"2,0\n-2,0\n2,0\n"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:5], body[5:]))
    conn.send(
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    status, _, answer = conn.reply()
    assert status == 200 and len(orjson.loads(answer)["predictions"]) == 3


def test_expect_100_continue_gets_a_continue_then_the_answer(conn):
    body = b"2,0\n"
    conn.send(  # a client that waits for 100 Continue before it sends the body
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    assert conn.reply()[0] == 100
    conn.send(body)
    status, _, answer = conn.reply()
    assert status == 200 and orjson.loads(answer)["predictions"][0] > 0.5


def test_a_declared_oversized_body_is_refused_before_it_is_read(server, conn):
    conn.send(
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
        b"Content-Length: %d\r\n\r\n" % (7 * 2**20)
    )
    status, headers, body = conn.reply()  # answered with no body byte sent
    assert status == 413 and headers[b"connection"] == b"close"
    assert "6291456" in orjson.loads(body)["message"]
    conn.send(b"x" * (7 * 2**20))  # the client sends it anyway: read and dropped
    assert conn.closed()
    assert_serving(server)


def test_an_oversized_chunked_body_is_refused_and_the_runtime_api_says_modelerror(
    server, conn
):
    chunk = b"1," * (2**20 // 2)  # 1 MB
    conn.send(
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(7):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status, headers, body = conn.reply()
    assert status == 424 and headers[b"x-amzn-errortype"] == b"ModelError"
    assert orjson.loads(body)["OriginalStatusCode"] == 413
    conn.send(b"0\r\n\r\n")
    assert conn.closed()
    assert_serving(server)


@pytest.mark.parametrize(
    "raw",
    [
        b"BREW /pot HTTP/1.1\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
        b"GET /ping HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
)
def test_a_malformed_request_gets_400_naming_it_and_the_server_serves_on(
    server, conn, raw
):
    conn.send(raw)
    status, headers, body = conn.reply()
    assert status == 400 and headers[b"connection"] == b"close"
    assert orjson.loads(body)["message"].startswith("malformed HTTP request")
    assert conn.closed()
    assert_serving(server)


def test_an_endless_head_gets_431(server, conn):
    conn.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
    with pytest.raises(OSError):  # the server closes while we still send
        for _ in range(200):
            conn.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            time.sleep(0.001)
    assert_serving(server)


def test_an_endless_head_in_small_pieces_gets_431(server, conn):
    conn.send(b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Long: ")
    sent = 0
    try:
        while sent < 200_000:
            conn.send(b"a" * 8192)
            sent += 8192
            time.sleep(0.002)
    except OSError:
        pass
    status, _, body = conn.reply()
    assert status == 431 and b"head exceeds" in body
    assert_serving(server)


def test_http_1_0_closes_unless_asked_to_keep_alive(server):
    plain = Conn(server.port)
    plain.send(b"GET /ping HTTP/1.0\r\n\r\n")
    status, headers, _ = plain.reply()
    assert status == 200 and headers[b"connection"] == b"close"
    assert plain.closed()
    plain.close()
    kept = Conn(server.port)
    for _ in range(2):
        kept.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = kept.reply()
        assert status == 200 and headers[b"connection"] == b"keep-alive"
    kept.close()


def test_connection_close_is_honoured_and_head_has_no_body(conn):
    conn.send(b"HEAD /invocations HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = _head_reply(conn)
    assert status == 405 and int(headers[b"content-length"]) > 0 and body == b""
    conn.send(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    status, headers, _ = conn.reply()
    assert status == 200 and headers[b"connection"] == b"close"
    assert conn.closed()


def _head_reply(conn):
    """The answer to a HEAD request: a head with Content-Length and no body."""
    while b"\r\n\r\n" not in conn.buffer:
        conn.buffer += conn.sock.recv(65536)
    head, _, conn.buffer = conn.buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {
        n.strip().lower(): v.strip()
        for n, _, v in (line.partition(b":") for line in lines[1:])
    }
    return int(lines[0].split(b" ", 2)[1]), headers, conn.buffer


def test_paths_with_a_query_or_percent_encoding_route_as_sagemaker_sends_them(conn):
    for path in (b"/invocations?x=1", b"/endpoints/my%2Dendpoint/invocations"):
        conn.send(post(b"2,0\n", path=path))
        status, _, _ = conn.reply()
        assert status == 200, path
    conn.send(b"GET /nowhere%20at%20all HTTP/1.1\r\n\r\n")
    status, _, body = conn.reply()
    assert status == 404 and "/nowhere at all" in orjson.loads(body)["message"]


def test_a_slow_client_is_answered_within_the_read_timeout(conn):
    request = post(b"2,0\n-2,0\n")
    for i in range(0, len(request), 7):
        conn.send(request[i : i + 7])
        time.sleep(0.02)
    status, _, body = conn.reply()
    assert status == 200 and len(orjson.loads(body)["predictions"]) == 2


def test_an_idle_keep_alive_connection_is_closed_and_others_are_served(server, conn):
    conn.send(post(b"2,0\n"))
    assert conn.reply()[0] == 200
    started = time.monotonic()
    assert_serving(server)
    assert conn.closed()  # blocks until the server closes it
    assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 3


def test_a_client_that_reads_no_answers_does_not_stop_the_others(server, conn):
    many = post(b"2,0\n" * 1000) * 200  # 200 answers of ~20 KB each, never read
    try:
        conn.sock.settimeout(2)
        conn.send(many)
    except OSError:
        pass  # the server stopped reading: back-pressure
    assert_serving(server)
