"""A bounded load test on the real server: 20,000 requests at concurrency 32 over
keep-alive connections, a mix of good and bad bodies. Zero unexpected answers, zero
connection errors, and the workers' memory stays flat.

"Flat" is judged round by round. A leak grows the workers in every round of requests;
an allocator reaching a new high-water mark (a burst of in-flight bodies on a busy
machine, transparent huge pages) is a one-off step. So the test sends the 20,000
requests in rounds and fails when *every* round grew, or when the total is large.
"""

import asyncio
import re

import psutil

from tests.inference.servers import running_server

REQUESTS = 20_000
ROUNDS = 4
CONCURRENCY = 32
# A leak of 200 bytes a request grows the workers 1 MB in each round of 5,000.
LEAK_PER_ROUND_MB = 1.0
TOTAL_GROWTH_MB = 64
BODIES = [
    (b"text/csv", b"1.5,-0.25\n", 200),
    (b"application/json", b'{"instances": [[1, 2], [3, null], [0, 0]]}', 200),
    (b"application/json", b'{"data": [[0, 1, 2], [1, 3, 4]]}', 200),
    (b"text/csv", b"1,2,3\n", 400),
    (b"application/json", b'{"instances": [[1, "x"]]}', 400),
    (b"image/png", b"\x89PNG", 415),
]


def request_bytes(content_type, body):
    return (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (content_type, len(body))
    ) + body


async def load(port, total, concurrency):
    """(unexpected answers, connection errors) after ``total`` requests."""
    prepared = [(request_bytes(t, b), s) for t, b, s in BODIES]
    counter = iter(range(total))
    unexpected, broken = [], []

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                request, expected = prepared[i % len(prepared)]
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                if status != expected:
                    unexpected.append((i, status))
        except (OSError, asyncio.IncompleteReadError) as exc:
            broken.append(repr(exc))
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return unexpected, broken


def worker_rss(server):
    return sum(p.memory_info().rss for p in psutil.Process(server.pid).children())


def test_20000_requests_at_concurrency_32_without_errors_or_growth(model_dir):
    unexpected, broken, rss = [], [], []
    with running_server(model_dir, workers=2) as server:
        asyncio.run(load(server.port, 2_000, CONCURRENCY))  # warm allocators, caches
        rss.append(worker_rss(server))
        for _ in range(ROUNDS):
            wrong, failed = asyncio.run(
                load(server.port, REQUESTS // ROUNDS, CONCURRENCY)
            )
            unexpected += wrong
            broken += failed
            rss.append(worker_rss(server))
    assert broken == []
    assert unexpected == []
    per_round_mb = [(after - before) / 2**20 for before, after in zip(rss, rss[1:])]
    shown = ", ".join(f"{mb:+.1f}" for mb in per_round_mb)
    assert min(per_round_mb) < LEAK_PER_ROUND_MB, (
        f"worker RSS grew in every round of {REQUESTS // ROUNDS} requests: {shown} MB"
    )
    assert sum(per_round_mb) < TOTAL_GROWTH_MB, f"worker RSS grew {shown} MB"
