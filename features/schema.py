"""The feature schema, defined once (``features/<set>/schema.yaml``) and checked
everywhere.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

DType = Literal["float", "int"]
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaError(ValueError):
    """Data does not meet the feature schema; the message names the column."""


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: DType = "float"
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True)
class FeatureSchema:
    entity_id: str
    label: str
    features: tuple[Feature, ...]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "label": self.label,
            "features": [
                {"name": f.name, "dtype": f.dtype, "nullable": f.nullable}
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        try:
            features = tuple(
                Feature(
                    name=str(item["name"]).lower(),
                    dtype=item.get("dtype", "float"),
                    nullable=bool(item.get("nullable", True)),
                    description=item.get("description", ""),
                )
                for item in data["features"]
            )
            schema = cls(
                entity_id=str(data["entity_id"]).lower(),
                label=str(data["label"]).lower(),
                features=features,
            )
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"feature schema is missing {exc}") from None
        schema._check_definition()
        return schema

    def _check_definition(self) -> None:
        names = [self.entity_id, self.label, *self.feature_names]
        for name in names:
            if not _NAME.fullmatch(name):
                raise SchemaError(f"column name {name!r} is not lower_snake_case")
        if len(set(names)) != len(names):
            raise SchemaError("column names in the feature schema must be unique")
        for feature in self.features:
            if feature.dtype not in ("float", "int"):
                raise SchemaError(f"feature {feature.name}: dtype must be float or int")
        if not self.features:
            raise SchemaError("the feature schema lists no features")

    def check_frame(
        self,
        frame: pd.DataFrame,
        require_label: bool = True,
        subset: bool = False,
    ) -> None:
        """Raise SchemaError unless ``frame`` has every column with a usable type.

        An empty frame, a missing column, a non-numeric feature, nulls in a
        non-nullable feature or a feature that is entirely null are all refused;
        ``subset`` (a few rows to score, not a data set) allows a nullable feature
        that happens to be null in all of them.
        """
        if frame.empty:
            raise SchemaError("the feature query returned no rows")
        required = [self.entity_id, *self.feature_names]
        if require_label:
            required.append(self.label)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise SchemaError(f"missing column(s): {', '.join(missing)}")
        for feature in self.features:
            column = frame[feature.name]
            nulls = int(column.isna().sum())
            if nulls == len(column):
                if subset and feature.nullable:
                    continue
                raise SchemaError(f"feature {feature.name} is null in every row")
            if not (
                pd.api.types.is_numeric_dtype(column)
                or pd.api.types.is_bool_dtype(column)
            ):
                raise SchemaError(
                    f"feature {feature.name} has type {column.dtype}, "
                    f"expected {feature.dtype}"
                )
            if nulls and not feature.nullable:
                raise SchemaError(
                    f"feature {feature.name} has {nulls} null(s) but is not nullable"
                )
        if require_label:
            labels = frame[self.label]
            if labels.isna().any():
                raise SchemaError(f"label {self.label} has nulls")
            if not set(np.unique(labels.astype(int))) <= {0, 1}:
                raise SchemaError(f"label {self.label} must be 0 or 1")

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Turn numeric columns that arrive as objects (``Decimal`` from NUMBER(p,s))
        into floats.

        A column that holds text stays as it is, so ``check_frame`` reports its type.
        """
        for name in [*self.feature_names, self.label]:
            if name in frame.columns and frame[name].dtype == object:
                with contextlib.suppress(ValueError, TypeError):
                    frame[name] = pd.to_numeric(frame[name]).astype("float64")
        return frame

    def conform_arrow(self, table: pa.Table) -> pa.Table:
        """Check one slice of extracted rows and cast it to the schema's Arrow types.

        Columns arrive lower- or upper-case, integers in any width, NUMBER(p,s) as
        decimals; out come lower-case names in schema order, ``int`` features and the
        label as int64, ``float`` features as float64, and the entity id as int64 or
        string, so every slice of every worker has one Parquet schema. Raises
        SchemaError for a missing column, a non-numeric feature, nulls in a
        non-nullable feature or the label, or a label other than 0/1. Checks that need
        every row (no rows at all, a feature null everywhere) are the caller's, with
        ``non_null_counts``.
        """
        table = table.rename_columns([c.lower() for c in table.column_names])
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise SchemaError(f"missing column(s): {', '.join(missing)}")
        arrays = [_entity_array(self.entity_id, table.column(self.entity_id))]
        for feature in self.features:
            column = table.column(feature.name)
            target = pa.float64() if feature.dtype == "float" else pa.int64()
            arrays.append(_numeric_array(feature.name, feature.dtype, column, target))
            nulls = column.null_count
            if nulls and not feature.nullable:
                if nulls == len(column):
                    raise SchemaError(f"feature {feature.name} is null in every row")
                raise SchemaError(
                    f"feature {feature.name} has {nulls} null(s) but is not nullable"
                )
        label = _numeric_array(self.label, "int", table.column(self.label), pa.int64())
        if label.null_count:
            raise SchemaError(f"label {self.label} has nulls")
        if len(label) and not pc.all(pc.is_in(label, pa.array([0, 1]))).as_py():
            raise SchemaError(f"label {self.label} must be 0 or 1")
        arrays.append(label)
        return pa.Table.from_arrays(arrays, names=self.columns)

    def non_null_counts(self, table: pa.Table) -> dict[str, int]:
        """Non-null values per feature in a conformed slice."""
        return {
            f.name: len(table) - table.column(f.name).null_count for f in self.features
        }

    def check_totals(self, rows: int, non_null: dict[str, int]) -> None:
        """The checks that need every row: some rows, no feature null everywhere."""
        if rows == 0:
            raise SchemaError("the feature query returned no rows")
        for feature in self.features:
            if non_null.get(feature.name, 0) == 0:
                raise SchemaError(f"feature {feature.name} is null in every row")

    @property
    def columns(self) -> list[str]:
        """Entity id, features in schema order, label: the extracted columns."""
        return [self.entity_id, *self.feature_names, self.label]

    def feature_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The features as a float32 matrix in schema order (NaN for nulls)."""
        return frame[self.feature_names].astype("float32").to_numpy()


def _entity_array(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_integer(kind) or (
        pa.types.is_decimal(kind) and kind.scale == 0  # type: ignore[attr-defined]
    ):
        return column.cast(pa.int64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.cast(pa.string())
    raise SchemaError(f"entity id {name} has type {kind}, expected integer or text")


def _numeric_array(
    name: str, dtype: str, column: pa.ChunkedArray, target: pa.DataType
) -> pa.ChunkedArray:
    kind = column.type
    numeric = (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )
    if not numeric:
        raise SchemaError(f"feature {name} has type {kind}, expected {dtype}")
    try:
        # safe casts: an int feature that arrives with fractions is refused, not cut
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"feature {name} has type {kind} that does not fit {dtype}: {exc}"
        ) from None


@dataclass(frozen=True)
class FeatureSet:
    name: str
    schema: FeatureSchema
    sql: str


def load_feature_set(name: str, directory: Path | None = None) -> FeatureSet:
    """Load ``<directory>/<name>/{schema.yaml,features.sql}``.

    ``directory`` is ``features.directory`` from the configuration; None reads the
    feature sets packaged under ``features/``.
    """
    if not _NAME.fullmatch(name):
        raise SchemaError(f"feature set name {name!r} is not lower_snake_case")
    folder: Any = (
        resources.files("features") / name if directory is None else directory / name
    )
    try:
        schema_data = yaml.safe_load((folder / "schema.yaml").read_text())
        sql = (folder / "features.sql").read_text()
    except FileNotFoundError:
        where = "features/" if directory is None else str(directory)
        raise SchemaError(f"no feature set named {name!r} under {where}") from None
    if not isinstance(schema_data, dict):
        raise SchemaError(f"{name}/schema.yaml must hold a mapping")
    return FeatureSet(name=name, schema=FeatureSchema.from_dict(schema_data), sql=sql)
