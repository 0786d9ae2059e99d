"""Random and malformed bodies: the server answers 4xx (or 200), never 5xx."""

import json
import random

import pytest

from inference.app import ScoringApp
from inference.model import load_model
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


def random_body(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.random()
    if kind < 0.5:
        return json.dumps(random_json(rng)).encode(), "application/json"
    if kind < 0.8:
        lines = (
            ",".join(str(rng.choice(ATOMS)) for _ in range(rng.randint(0, 3)))
            for _ in range(rng.randint(0, 3))
        )
        return "\n".join(lines).encode(), "text/csv"
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return raw, rng.choice(["text/csv", "application/json", "", "text/plain", "x/y"])


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_bodies_never_get_a_5xx(model_dir, seed):
    app = ScoringApp(load_model(model_dir))
    rng = random.Random(seed)
    statuses = set()
    for _ in range(1500):
        body, content_type = random_body(rng)
        status, _, _ = call(
            app, "POST", "/invocations", body, [("content-type", content_type)]
        )
        assert status < 500, (body, content_type)
        statuses.add(status)
    assert 400 in statuses
    assert (
        call(app, "POST", "/invocations", b"1,2\n", [("content-type", "text/csv")])[0]
        == 200
    )
