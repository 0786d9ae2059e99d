"""The feature schema, defined once (``features/<set>/schema.yaml``) and checked
everywhere.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd
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
            if not _NAME.match(name):
                raise SchemaError(f"column name {name!r} is not lower_snake_case")
        if len(set(names)) != len(names):
            raise SchemaError("column names in the feature schema must be unique")
        for feature in self.features:
            if feature.dtype not in ("float", "int"):
                raise SchemaError(f"feature {feature.name}: dtype must be float or int")
        if not self.features:
            raise SchemaError("the feature schema lists no features")

    def check_frame(self, frame: pd.DataFrame, require_label: bool = True) -> None:
        """Raise SchemaError unless ``frame`` has every column with a usable type.

        An empty frame, a missing column, a non-numeric feature, nulls in a
        non-nullable feature or a feature that is entirely null are all refused.
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

    def feature_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The features as a float32 matrix in schema order (NaN for nulls)."""
        return frame[self.feature_names].astype("float32").to_numpy()


@dataclass(frozen=True)
class FeatureSet:
    name: str
    schema: FeatureSchema
    sql: str


def load_feature_set(name: str) -> FeatureSet:
    """Load ``features/<name>/{schema.yaml,features.sql}`` from the package."""
    if not _NAME.match(name):
        raise SchemaError(f"feature set name {name!r} is not lower_snake_case")
    folder = resources.files("features") / name
    try:
        schema_data = yaml.safe_load((folder / "schema.yaml").read_text())
        sql = (folder / "features.sql").read_text()
    except FileNotFoundError:
        raise SchemaError(f"no feature set named {name!r} under features/") from None
    return FeatureSet(name=name, schema=FeatureSchema.from_dict(schema_data), sql=sql)
