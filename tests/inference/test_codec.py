import numpy as np
import orjson
import pytest

from features import FeatureSchema
from inference.codec import (
    MAX_PAYLOAD_BYTES,
    RequestError,
    decode_body,
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
            b'{"data": [[null]], "columns": [[]]}',
            "application/json",
            400,
            "'columns' must be a list of feature names",
        ),  # a list as a column name: found by test_properties (was a 500)
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


# Issue 21, item 4: one behaviour whatever the size; the other inputs closed.


@pytest.mark.parametrize("rows", [2, 3000])  # under and over 16 KB (Arrow's reader)
def test_a_utf8_bom_is_skipped_on_every_path(rows):
    body = "".join(f"{i},{-i}\n" for i in range(rows)).encode()
    plain = parse_request(body, "text/csv", SCHEMA).matrix
    np.testing.assert_array_equal(
        parse_request(b"\xef\xbb\xbf" + body, "text/csv", SCHEMA).matrix, plain
    )
    np.testing.assert_array_equal(
        parse_request(b"\xef\xbb\xbfa,b\n" + body, "text/csv", SCHEMA).matrix, plain
    )
    as_json = orjson.dumps({"instances": [[i, -i] for i in range(rows)]})
    np.testing.assert_array_equal(
        parse_request(b"\xef\xbb\xbf" + as_json, "application/json", SCHEMA).matrix,
        plain,
    )


@pytest.mark.parametrize(
    "number",
    ["null", '"abc"', '"1"', "[1]", "true", "false", "1.0", "-1", '{"n": 1}']
    + [str(2**63), str(2**64), str(2**70)],
)
def test_snowflake_row_numbers_must_be_integers_in_range(number):
    body = b'{"data": [[0, 1, 2], [%s, 3, 4]]}' % number.encode()
    with pytest.raises(RequestError, match="row 1: the row number must be an integer"):
        parse_request(body, "application/json", SCHEMA)
    with pytest.raises(RequestError) as error:  # the slow path names it too
        parse_request(body.replace(b"3, 4", b'"x", 4'), "application/json", SCHEMA)
    assert "row 1" in str(error.value)


def test_snowflake_row_numbers_up_to_2_63_minus_1_are_echoed_as_integers():
    top = 2**63 - 1
    parsed = parse_request(
        b'{"data": [[%d, 1, 2], [0, 3, 4]]}' % top, "application/json", SCHEMA
    )
    assert parsed.row_numbers == [top, 0]
    body, _ = encode_response(np.array([0.5, 0.5]), "", parsed.row_numbers)
    assert orjson.loads(body)["data"][0][0] == top


def test_json_lines_hold_one_record_or_row_per_line():
    body = b'{"a": 1, "b": 2}\n\n{"a": 3, "b": null}\r\n'
    parsed = parse_request(body, "application/jsonlines", SCHEMA)
    assert parsed.matrix[0].tolist() == [1.0, 2.0] and np.isnan(parsed.matrix[1, 1])
    rows = parse_request(b"[1, 2]\n[3, null]", "application/jsonlines", SCHEMA)
    np.testing.assert_array_equal(rows.matrix, parsed.matrix)
    with pytest.raises(RequestError, match="line 1: not valid JSON"):
        parse_request(b'{"a": 1, "b": 2}\n{"a": 3,', "application/jsonlines", SCHEMA)
    with pytest.raises(RequestError, match="row 1: missing feature"):
        parse_request(b'{"a": 1, "b": 2}\n{"b": 3}', "application/jsonlines", SCHEMA)
    with pytest.raises(RequestError, match="no records"):
        parse_request(b"\n \n", "application/jsonlines", SCHEMA)


def test_gzip_bodies_are_decoded_and_other_codings_refused():
    import gzip

    body = b"1,2\n3,\n"
    assert decode_body(gzip.compress(body), "gzip") == body
    assert (
        decode_body(gzip.compress(body[:4]) + gzip.compress(body[4:]), "gzip") == body
    )
    assert decode_body(body, "identity") == body
    for coding, status, message in [
        ("br", 415, "unsupported Content-Encoding 'br'"),
        ("deflate", 415, "unsupported Content-Encoding 'deflate'"),
    ]:
        with pytest.raises(RequestError, match=message) as error:
            decode_body(body, coding)
        assert error.value.status == status
    with pytest.raises(RequestError, match="cannot be decoded") as error:
        decode_body(body, "gzip")
    assert error.value.status == 400
    with pytest.raises(RequestError, match="truncated"):
        decode_body(gzip.compress(body)[:-12], "gzip")
    bomb = gzip.compress(b"0" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(RequestError, match="exceeds .* once decoded") as error:
        decode_body(bomb, "gzip")
    assert error.value.status == 413


@pytest.mark.parametrize("rows", [3, 64, 500])
def test_large_json_batches_convert_exactly_as_numpy_converts_each_value(rows):
    """Batches of 64 rows and more take a flat float64 iterator and one cast to
    float32; every value must round exactly as ``np.array(..., float32)`` rounds it.
    """
    rng = np.random.default_rng(rows)
    values = []
    for i in range(rows):
        a = [
            float(rng.normal() * 10.0 ** rng.integers(-40, 38)),
            int(rng.integers(-(2**62), 2**62)),
            f"{rng.normal():.17g}",
            True,
        ][i % 4]
        b = None if i % 3 == 0 else float(rng.normal())
        values.append([a, b])
    body = orjson.dumps({"instances": values})
    matrix = parse_request(body, "application/json", SCHEMA).matrix
    expected = np.array(values, dtype=np.float32)
    np.testing.assert_array_equal(matrix, expected)


def test_a_large_batch_with_a_ragged_row_names_the_row():
    rows = [[1, 2]] * 100
    rows[70] = [1, 2, 3]
    with pytest.raises(RequestError, match="row 70"):
        parse_request(orjson.dumps(rows), "application/json", SCHEMA)
