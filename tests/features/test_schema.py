from decimal import Decimal

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


def arrow(**columns):
    import pyarrow as pa

    base = {
        "ID": pa.array([1, 2, 3], pa.int8()),
        "A": pa.array(
            [Decimal("0.10"), Decimal("0.25"), Decimal("1")], pa.decimal128(8, 2)
        ),
        "B": pa.array([1.0, None, 3.0]),
        "Y": pa.array([0, 1, 0], pa.int16()),
    }
    base.update(columns)
    return pa.table(base)


def test_a_slice_is_cast_to_one_arrow_schema():
    import pyarrow as pa

    nullable_a = FeatureSchema.from_dict(
        {**SCHEMA.to_dict(), "features": [{"name": "a"}, {"name": "b", "dtype": "int"}]}
    )
    table = nullable_a.conform_arrow(arrow())
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("a", pa.float64()), ("b", pa.int64()), ("y", pa.int64())]
    )
    assert table.column("a").to_pylist() == [0.1, 0.25, 1.0]
    assert nullable_a.non_null_counts(table) == {"a": 3, "b": 2}
    text_ids = nullable_a.conform_arrow(arrow(ID=pa.array(["x", "y", "z"])))
    assert text_ids.schema.field("id").type == pa.string()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"B": None}, "missing column"),
        ({"B": ["x", "y", "z"]}, "feature b has type string, expected int"),
        ({"B": [1.5, 2.0, 3.0]}, "feature b has type double that does not fit int"),
        ({"A": [0.5, None, 0.5]}, "feature a has 1 null"),
        ({"A": [None, None, None]}, "feature a is null in every row"),
        ({"Y": [0, 2, 0]}, "label y must be 0 or 1"),
        ({"Y": [0, None, 0]}, "label y has nulls"),
        ({"ID": [1.5, 2.5, 3.5]}, "entity id id has type double"),
    ],
)
def test_a_bad_slice_is_refused_with_the_column(columns, message):
    import pyarrow as pa

    table = arrow(**{k: pa.array(v) for k, v in columns.items() if v is not None})
    if columns.get("B", 0) is None:
        table = table.drop_columns(["B"])
    with pytest.raises(SchemaError, match=message):
        SCHEMA.conform_arrow(table)


def test_totals_refuse_no_rows_and_a_feature_null_everywhere():
    with pytest.raises(SchemaError, match="no rows"):
        SCHEMA.check_totals(0, {"a": 0, "b": 0})
    with pytest.raises(SchemaError, match="feature b is null in every row"):
        SCHEMA.check_totals(3, {"a": 3, "b": 0})
    SCHEMA.check_totals(3, {"a": 3, "b": 1})


def test_a_feature_set_can_live_in_a_configured_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "features.sql").write_text("SELECT 1 AS id")
    (tmp_path / "mine" / "schema.yaml").write_text(
        "entity_id: id\nlabel: y\nfeatures: [{name: a}]\n"
    )
    assert load_feature_set("mine", tmp_path).schema.feature_names == ["a"]
    with pytest.raises(SchemaError, match="no feature set named 'other'"):
        load_feature_set("other", tmp_path)
