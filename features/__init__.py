"""Feature sets: the SQL that computes features in Snowflake and the schema it must
meet.

One feature set serves extraction, training, evaluation, serving and write-back.
"""

from features.schema import (
    Feature,
    FeatureSchema,
    FeatureSet,
    SchemaError,
    load_feature_set,
)

__all__ = ["Feature", "FeatureSchema", "FeatureSet", "SchemaError", "load_feature_set"]
