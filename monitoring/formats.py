"""SageMaker Model Monitor's file formats, as JSON Schemas of their documented fields.

``statistics.json`` and ``constraints.json`` (a baseline, and the statistics of each
checked batch) and ``constraint_violations.json`` (a check's findings) follow the
schemas in the Model Monitor developer guide ("Schema for Statistics", "Schema for
Constraints", "Schema for Violations"). Our files are checked against these before they
are written, and a baseline we are given (possibly made by Model Monitor's own
analyzer) is checked before it is used, so a malformed one is refused by name.

Bring-your-own containers may add fields ("enhance it as required"); ours adds only
what the documented fields cannot carry, and says so where it does: the violation
types ``range_check`` and ``LessThanThreshold`` (the latter as the model-quality
monitor reports a metric below its threshold, with ``metric_name``).
"""

from __future__ import annotations

from typing import Any

_NUMBER = {"type": "number"}
_COMMON = {
    "type": "object",
    "required": ["num_present", "num_missing"],
    "properties": {
        "num_present": {"type": "integer", "minimum": 0},
        "num_missing": {"type": "integer", "minimum": 0},
    },
}
_KLL = {
    "type": "object",
    "required": ["buckets", "sketch"],
    "properties": {
        "buckets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["lower_bound", "upper_bound", "count"],
                "properties": {
                    "lower_bound": _NUMBER,
                    "upper_bound": _NUMBER,
                    "count": {"type": "number", "minimum": 0},
                },
            },
        },
        "sketch": {
            "type": "object",
            "required": ["parameters", "data"],
            "properties": {
                "parameters": {
                    "type": "object",
                    "required": ["c", "k"],
                    "properties": {"c": _NUMBER, "k": _NUMBER},
                },
                "data": {"type": "array", "items": {"type": "array", "items": _NUMBER}},
            },
        },
    },
}
_NUMERICAL = {
    "type": "object",
    "required": ["common", "mean", "sum", "std_dev", "min", "max", "distribution"],
    "properties": {
        "common": _COMMON,
        "mean": _NUMBER,
        "sum": _NUMBER,
        "std_dev": _NUMBER,
        "min": _NUMBER,
        "max": _NUMBER,
        "distribution": {
            "type": "object",
            "required": ["kll"],
            "properties": {"kll": _KLL},
        },
    },
}
_STRING = {
    "type": "object",
    "required": ["common", "distinct_count"],
    "properties": {
        "common": _COMMON,
        "distinct_count": {"type": "number", "minimum": 0},
        "distribution": {
            "type": "object",
            "properties": {
                "categorical": {
                    "type": "object",
                    "properties": {
                        "buckets": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["value", "count"],
                                "properties": {
                                    "value": {"type": "string"},
                                    "count": {"type": "number"},
                                },
                            },
                        }
                    },
                }
            },
        },
    },
}
INFERRED_TYPES = ("Integral", "Fractional", "String", "Unknown")

STATISTICS: dict[str, Any] = {
    "type": "object",
    "required": ["version", "dataset", "features"],
    "properties": {
        "version": _NUMBER,
        "dataset": {
            "type": "object",
            "required": ["item_count"],
            "properties": {"item_count": {"type": "integer", "minimum": 0}},
        },
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "inferred_type"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "inferred_type": {"enum": list(INFERRED_TYPES)},
                    "numerical_statistics": _NUMERICAL,
                    "string_statistics": _STRING,
                },
                "oneOf": [
                    {"required": ["numerical_statistics"]},
                    {"required": ["string_statistics"]},
                ],
            },
        },
    },
}

CONSTRAINTS: dict[str, Any] = {
    "type": "object",
    "required": ["version", "features"],
    "properties": {
        "version": _NUMBER,
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "inferred_type"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "inferred_type": {"enum": list(INFERRED_TYPES)},
                    "completeness": {"type": "number", "minimum": 0, "maximum": 1},
                    "num_constraints": {
                        "type": "object",
                        "properties": {"is_non_negative": {"type": "boolean"}},
                    },
                    "string_constraints": {
                        "type": "object",
                        "properties": {
                            "domains": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "monitoringConfigOverrides": {"type": "object"},
                },
            },
        },
        "monitoring_config": {
            "type": "object",
            "properties": {
                "evaluate_constraints": {"enum": ["Enabled", "Disabled"]},
                "emit_metrics": {"enum": ["Enabled", "Disabled"]},
                "datatype_check_threshold": _NUMBER,
                "domain_content_threshold": _NUMBER,
                "distribution_constraints": {
                    "type": "object",
                    "properties": {
                        "perform_comparison": {"enum": ["Enabled", "Disabled"]},
                        "comparison_threshold": _NUMBER,
                        "comparison_method": {"enum": ["Simple", "Robust"]},
                        "categorical_comparison_threshold": _NUMBER,
                        "categorical_drift_method": {
                            "enum": ["LInfinity", "ChiSquared"]
                        },
                    },
                },
            },
        },
    },
}

# The documented check types, then ours (see the module's docstring).
DOCUMENTED_CHECKS = (
    "data_type_check",
    "completeness_check",
    "baseline_drift_check",
    "missing_column_check",
    "extra_column_check",
    "categorical_values_check",
)
OUR_CHECKS = ("range_check", "LessThanThreshold")

VIOLATIONS: dict[str, Any] = {
    "type": "object",
    "required": ["violations"],
    "properties": {
        "violations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["constraint_check_type", "description"],
                "properties": {
                    "feature_name": {"type": "string"},
                    "metric_name": {"type": "string"},
                    "constraint_check_type": {
                        "enum": list(DOCUMENTED_CHECKS + OUR_CHECKS)
                    },
                    "description": {"type": "string", "minLength": 1},
                },
                "anyOf": [
                    {"required": ["feature_name"]},
                    {"required": ["metric_name"]},
                ],
            },
        }
    },
}


class FormatError(ValueError):
    """A Model Monitor file does not have its documented fields."""


def check(document: Any, schema: dict[str, Any], what: str) -> None:
    """Raise FormatError naming the first field of ``document`` that breaks
    ``schema``.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(document), key=str)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise FormatError(f"{what}: {where}: {error.message}")
