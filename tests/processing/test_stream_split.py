"""The split of every entity is the one it always had.

``reference_split`` is ``assign_split`` as it was before its hash got a faster path
(the pandas column, cast to ``str``, hashed by ``hash_pandas_object``); every id
below must get the same hash, and so the same split, from the code of today.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from processing.stream import (
    SPLITS,
    _plain_ids,
    assign_split,
    entity_hashes,
    split_codes,
)

RNG = np.random.default_rng(22)


def reference_hashes(ids: pd.Series) -> np.ndarray:
    return pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()


def reference_split(ids: pd.Series, validation: float, test: float) -> np.ndarray:
    position = (reference_hashes(ids) % np.uint64(10_000)).astype(np.float64) / 10_000
    return np.where(
        position < test,
        "test",
        np.where(position < test + validation, "validation", "train"),
    )


def _integer_ids() -> np.ndarray:
    info = np.iinfo(np.int64)
    return np.concatenate(
        [
            np.arange(-1_000, 200_000),
            RNG.integers(info.min, info.max, 100_000, dtype=np.int64),
            np.array([info.min, info.min + 1, info.max, info.max - 1, 0, -1]),
            10 ** np.arange(19, dtype=np.int64),
        ]
    )


def _text_ids() -> list[str]:
    alphabet = [*"abcXYZ019 -_./:@", *"éßΩж中文😀", "\u0301"]
    lengths = RNG.integers(0, 40, 30_000)
    random = ["".join(RNG.choice(alphabet, n)) for n in lengths]
    fixed = ["", " ", "0", "007", "-5", "1e3", "nan", "None", "Zoë", "東京", "👍🏽" * 9]
    uuids = [f"{RNG.integers(2**63):016x}-{i:08d}-cust" for i in range(20_000)]
    return random + fixed + uuids + [str(i) for i in range(-500, 20_000)]


@pytest.mark.parametrize(
    "ids",
    [
        pd.Series(_integer_ids()),
        pd.Series(_integer_ids().astype(np.int32, casting="unsafe")),
        pd.Series(np.arange(0, 50_000, dtype=np.uint64) * np.uint64(2**45)),
        pd.Series(_text_ids()),
        pd.Series(_text_ids(), dtype="string"),
        pd.Series(list(range(-50, 50_000)), dtype=object),
    ],
    ids=["int64", "int32", "uint64", "text", "pandas-string", "python-ints"],
)
def test_the_hash_of_every_id_is_the_one_the_splits_always_used(ids):
    assert _plain_ids(ids) is not None  # these take the fast path
    expected = reference_hashes(ids)
    np.testing.assert_array_equal(entity_hashes(ids), expected)
    np.testing.assert_array_equal(
        assign_split(ids, 0.15, 0.15), reference_split(ids, 0.15, 0.15)
    )


@pytest.mark.parametrize("kind", [pa.int64(), pa.string(), pa.large_string()])
def test_arrow_columns_hash_as_their_pandas_columns_did(kind):
    """The stream hashes the conformed Arrow column, which before went through
    ``to_pandas()``; chunked and sliced arrays included."""
    values = _integer_ids() if kind == pa.int64() else _text_ids()
    if kind != pa.int64():
        values = np.asarray(values, dtype=object)
    array = pa.array(values, type=kind)
    chunked = pa.chunked_array([array.slice(0, 1_000), array.slice(1_000)])
    for arrow in (array, chunked, array.slice(7, 10_000)):
        expected = reference_hashes(arrow.to_pandas())
        np.testing.assert_array_equal(entity_hashes(arrow), expected)


@pytest.mark.parametrize(
    "ids",
    [
        pd.Series([1.0, 2.5, 3.0, np.nan]),
        pd.Series([1, None, 3], dtype="Int64"),
        pd.Series(["a", None, "c"]),
        pd.Series([True, False, True]),
        pd.Series([1, "a", 2.0, None], dtype=object),
        pd.Series(pd.to_datetime(["2026-01-01", "2026-03-31"])),
    ],
    ids=["floats", "nullable-int", "text-with-none", "bools", "mixed", "dates"],
)
def test_ids_off_the_fast_path_keep_the_original_hash(ids):
    assert _plain_ids(ids) is None
    np.testing.assert_array_equal(entity_hashes(ids), reference_hashes(ids))
    arrow = pa.chunked_array([pa.array([1, None, 3])])  # integers with a null
    np.testing.assert_array_equal(
        entity_hashes(arrow), reference_hashes(arrow.to_pandas())
    )


def test_no_ids_hash_to_nothing():
    assert entity_hashes(pd.Series([], dtype=np.int64)).shape == (0,)
    assert assign_split(pa.array([], type=pa.string()), 0.15, 0.15).shape == (0,)


def test_split_codes_index_the_split_names():
    hashed = entity_hashes(pd.Series(np.arange(10_000)))
    names = np.asarray(SPLITS)[split_codes(hashed, 0.2, 0.1)]
    np.testing.assert_array_equal(
        names, reference_split(pd.Series(np.arange(10_000)), 0.2, 0.1)
    )
    with pytest.raises(ValueError, match="below 1"):
        split_codes(hashed, 0.5, 0.5)
