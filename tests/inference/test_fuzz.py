"""Random and malformed bodies: the server answers 4xx (or 200), never 5xx.

Bodies are JSON, JSON Lines, Snowflake's format (row numbers of every JSON type), CSV
and raw bytes, some behind a UTF-8 BOM, some gzip-encoded (or with a coding the server
refuses).
"""

import gzip
import json
import random

import numpy as np
import orjson
import pytest

from inference import codec
from inference.app import ScoringApp
from inference.codec import RequestError, parse_request
from inference.model import load_model
from tests.inference.conftest import SCHEMA
from tests.inference.test_server import call

ATOMS = [
    0,
    1,
    -1,
    1.5,
    1e39,
    -1e39,
    1e308,
    "1",
    "x",
    "",
    None,
    True,
    [],
    {},
    "nan",
    "inf",
    "1e39",
    2**70,
    [1, 2],
    {"x1": 1},
    "\r",
    "\x00",
    "1,2",
    " 1",
    "1 ",
    "+1",
    "1_0",
    "0x10",
    "\uff11",
    "1e5",
    "-0",
]
KEYS = ["instances", "data", "columns", "x1", "x2", "a"]


def random_json(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 3 or pick < 0.4:
        return rng.choice(ATOMS)
    if pick < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(KEYS): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))
    }


ROW_NUMBERS = [*ATOMS, 2**63 - 1, 2**63, 2**64, -(2**63), 0.0, 3]


def random_body(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.random()
    if kind < 0.35:
        return json.dumps(random_json(rng)).encode(), "application/json"
    if kind < 0.45:
        rows = [
            [rng.choice(ROW_NUMBERS), *(rng.choice(ATOMS[:8]) for _ in range(2))]
            for _ in range(rng.randint(1, 3))
        ]
        return json.dumps({"data": rows}).encode(), "application/json"
    if kind < 0.55:
        lines = (json.dumps(random_json(rng)) for _ in range(rng.randint(0, 3)))
        return "\n".join(lines).encode(), "application/jsonlines"
    if kind < 0.8:
        return random_csv(rng), "text/csv"
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return raw, rng.choice(
        ["text/csv", "application/json", "application/jsonlines", "", "x/y"]
    )


def random_csv(rng: random.Random) -> bytes:
    lines = (
        ",".join(str(rng.choice(ATOMS)) for _ in range(rng.randint(0, 3)))
        for _ in range(rng.randint(0, 3))
    )
    return "\n".join(lines).encode()


def random_request(rng: random.Random) -> tuple[bytes, list[tuple[str, str]]]:
    """A body and its headers: sometimes behind a BOM, sometimes gzip-encoded (or
    declared in a coding the server refuses).
    """
    body, content_type = random_body(rng)
    if rng.random() < 0.2:
        body = b"\xef\xbb\xbf" + body
    headers = [("content-type", content_type)]
    pick = rng.random()
    if pick < 0.2:
        headers.append(("content-encoding", "gzip"))
        body = gzip.compress(body) if rng.random() < 0.9 else body
    elif pick < 0.25:
        headers.append(("content-encoding", rng.choice(["br", "deflate", "x"])))
    return body, headers


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_bodies_never_get_a_5xx(model_dir, seed):
    app = ScoringApp(load_model(model_dir))
    rng = random.Random(seed)
    statuses = set()
    for _ in range(1500):
        body, headers = random_request(rng)
        status, _, answer = call(app, "POST", "/invocations", body, headers)
        assert status < 500, (body, headers)
        statuses.add(status)
        if status == 200 and b'"data"' in answer:  # Snowflake: integer row numbers
            numbers = [row[0] for row in orjson.loads(answer)["data"]]
            assert all(type(n) is int and 0 <= n < 2**63 for n in numbers), body
    assert {200, 400, 415} <= statuses
    assert (
        call(app, "POST", "/invocations", b"1,2\n", [("content-type", "text/csv")])[0]
        == 200
    )


@pytest.mark.parametrize("seed", range(2))
def test_a_csv_body_parses_the_same_through_arrow_and_row_by_row(monkeypatch, seed):
    """One behaviour whatever the size: each fuzzed CSV body (BOM or not), parsed with
    Arrow's reader forced on and forced off, gives the same matrix or the same error.
    """
    rng = random.Random(seed)
    for _ in range(500):
        body = random_csv(rng) * rng.choice([1, 2])
        if rng.random() < 0.3:
            body = b"\xef\xbb\xbf" + body
        outcomes = []
        for threshold in (0, 10**9):
            monkeypatch.setattr(codec, "_ARROW_CSV_BYTES", threshold)
            try:
                outcomes.append(parse_request(body, "text/csv", SCHEMA).matrix)
            except RequestError as exc:
                outcomes.append(str(exc))
        arrow, python = outcomes
        if isinstance(arrow, str) or isinstance(python, str):
            assert (arrow if isinstance(arrow, str) else "a matrix") == (
                python if isinstance(python, str) else "a matrix"
            ), body
        else:
            np.testing.assert_array_equal(arrow, python, err_msg=repr(body))
