import numpy as np
import orjson
import pytest

from features import FeatureSchema
from inference.codec import (
    MAX_PAYLOAD_BYTES,
    RequestError,
    encode_response,
    parse_request,
)

SCHEMA = FeatureSchema.from_dict(
    {
        "entity_id": "id",
        "label": "y",
        "features": [{"name": "a", "nullable": False}, {"name": "b"}],
    }
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"1,2\n3,\n", "text/csv"),
        (b"a,b\n1,2\n3,\n", "text/csv; charset=utf-8"),
        (b'[{"a": 1, "b": 2}, {"a": 3, "b": null}]', "application/json"),
        (b'{"instances": [[1, 2], [3, null]]}', "application/json"),
        (b'{"instances": [{"a": 1, "b": 2}, {"a": 3, "b": null}]}', "application/json"),
        (b'{"columns": ["b", "a"], "data": [[2, 1], [null, 3]]}', "application/json"),
    ],
)
def test_every_accepted_shape_gives_the_same_matrix(body, content_type):
    parsed = parse_request(body, content_type, SCHEMA)
    assert parsed.matrix.shape == (2, 2)
    assert parsed.matrix[0].tolist() == [1.0, 2.0]
    assert parsed.matrix[1, 0] == 3.0 and np.isnan(parsed.matrix[1, 1])
    assert parsed.row_numbers is None


def test_snowflake_format_keeps_row_numbers():
    parsed = parse_request(
        b'{"data": [[0, 1, 2], [1, 3, 4]]}', "application/json", SCHEMA
    )
    assert parsed.row_numbers == [0, 1]
    body, media = encode_response(np.array([0.25, 0.75]), "", parsed.row_numbers)
    assert orjson.loads(body) == {"data": [[0, 0.25], [1, 0.75]]}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"", "text/csv", 400, "empty"),
        (b"1,2,3\n", "text/csv", 400, "row 0: expected 2 features, got 3"),
        (b"1,2\n1,x\n", "text/csv", 400, "row 1, column b"),
        (b",2\n", "text/csv", 400, "row 0, column a: a value is required"),
        (b"nan,2\n", "text/csv", 400, "row 0, column a: a value is required"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"instances": [[1, "inf"]]}', "application/json", 400, "infinite"),
        (b'[{"a": 1}]', "application/json", 400, "missing feature"),
        (b'{"something": 1}', "application/json", 400, "unrecognised"),
        (
            b'{"instances": [[1, {"x": 1}]]}',
            "application/json",
            400,
            "expected a number",
        ),
        (b"1,2", "application/xml", 415, "unsupported content type"),
        (b"\xff\xfe", "text/csv", 400, "UTF-8"),
        (b"1," + b"9" * 200_000, "text/csv", 400, "row 0, column b: infinite"),
        (b'1,"' + b"9" * 200_000 + b'"', "text/csv", 400, "cannot be parsed"),
        (b'{"instances": [[1, 1e39]]}', "application/json", 400, "out-of-range"),
        (b"1" * (MAX_PAYLOAD_BYTES + 1), "text/csv", 413, "exceeds"),
    ],
)
def test_bad_requests_name_what_is_wrong(body, content_type, status, message):
    with pytest.raises(RequestError, match=message) as error:
        parse_request(body, content_type, SCHEMA)
    assert error.value.status == status


def test_accept_negotiation():
    scores = np.array([0.5])
    assert encode_response(scores, "text/csv", None) == (b"0.500000\n", "text/csv")
    assert encode_response(scores, "*/*", None)[1] == "application/json"
    with pytest.raises(RequestError) as error:
        encode_response(scores, "application/xml", None)
    assert error.value.status == 406


def test_large_csv_bodies_parse_like_small_ones():
    """Bodies over 16 KB take Arrow's reader; the result and the errors are the same."""
    rows = [[float(i), "" if i % 7 == 0 else float(-i)] for i in range(3000)]
    body = "\n".join(f"{a},{b}" for a, b in rows).encode() + b"\n"
    assert len(body) > 16 * 1024
    large = parse_request(body, "text/csv", SCHEMA).matrix
    assert large.shape == (3000, 2)
    assert large[1].tolist() == [1.0, -1.0] and np.isnan(large[7, 1])
    with_header = parse_request(b"a,b\n" + body, "text/csv", SCHEMA).matrix
    np.testing.assert_array_equal(with_header, large)
    required_missing = body.replace(b"\n5.0,-5.0\n", b"\n,-5.0\n")
    with pytest.raises(RequestError, match="row 5, column a: a value is required"):
        parse_request(required_missing, "text/csv", SCHEMA)
    ragged = body.replace(b"\n5.0,-5.0\n", b"\n5.0,-5.0,1\n")
    with pytest.raises(RequestError, match="row 5: expected 2 features, got 3"):
        parse_request(ragged, "text/csv", SCHEMA)
