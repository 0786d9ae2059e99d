import numpy as np
import pandas as pd
import pytest

from features import FeatureSchema, SchemaError, load_feature_set

SCHEMA = FeatureSchema.from_dict(
    {
        "entity_id": "id",
        "label": "y",
        "features": [
            {"name": "a", "dtype": "float", "nullable": False},
            {"name": "b", "dtype": "int", "nullable": True},
        ],
    }
)


def frame(**columns):
    base = {"id": [1, 2, 3], "a": [0.1, 0.2, 0.3], "b": [1, None, 3], "y": [0, 1, 0]}
    base.update(columns)
    return pd.DataFrame(base)


def test_a_good_frame_passes_and_gives_a_float32_matrix():
    data = frame()
    SCHEMA.check_frame(data)
    matrix = SCHEMA.feature_matrix(data)
    assert matrix.dtype == np.float32 and matrix.shape == (3, 2)
    assert np.isnan(matrix[1, 1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (frame().iloc[0:0], "no rows"),
        (frame().drop(columns=["b"]), "missing column"),
        (frame(a=["x", "y", "z"]), "feature a has type"),
        (frame(b=[None, None, None]), "feature b is null in every row"),
        (frame(a=[0.1, None, 0.3]), "not nullable"),
        (frame(y=[0, 2, 1]), "must be 0 or 1"),
    ],
)
def test_bad_frames_are_refused_with_the_column_named(data, message):
    with pytest.raises(SchemaError, match=message):
        SCHEMA.check_frame(data)


def test_decimals_from_number_columns_are_coerced():
    from decimal import Decimal

    data = frame(a=[Decimal("0.1"), Decimal("0.2"), Decimal("0.3")])
    SCHEMA.coerce(data)
    assert data["a"].dtype == np.float64
    SCHEMA.check_frame(data)


@pytest.mark.parametrize(
    "bad",
    [
        {"entity_id": "id", "label": "y", "features": []},
        {"entity_id": "id", "label": "y", "features": [{"name": "Bad Name"}]},
        {"entity_id": "id", "label": "id", "features": [{"name": "a"}]},
        {"entity_id": "id", "features": [{"name": "a"}]},
    ],
)
def test_bad_schema_definitions_are_refused(bad):
    with pytest.raises(SchemaError):
        FeatureSchema.from_dict(bad)


def test_the_churn_feature_set_loads():
    feature_set = load_feature_set("churn")
    assert feature_set.schema.entity_id == "customer_id"
    assert "%(as_of)s" in feature_set.sql
    with pytest.raises(SchemaError, match="no feature set"):
        load_feature_set("nope")
