"""The training job's hyperparameters: names, types and defaults, in one place.

Light on purpose (no XGBoost import): configuration validates overrides against it when
it loads, and the pipeline definition writes the full set into the Train step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Known hyperparameters and their types: a typo fails the job instead of being ignored.
HYPERPARAMETER_TYPES: dict[str, type] = {
    "feature_set": str,
    "max_depth": int,
    "eta": float,
    "num_round": int,
    "early_stopping_rounds": int,
    "subsample": float,
    "colsample_bytree": float,
    "min_child_weight": float,
    "reg_lambda": float,
    "seed": int,
}
DEFAULTS: dict[str, Any] = {
    "feature_set": "churn",
    "max_depth": 5,
    "eta": 0.1,
    "num_round": 300,
    "early_stopping_rounds": 20,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "min_child_weight": 1.0,
    "reg_lambda": 1.0,
    "seed": 7,
}


class HyperparameterError(ValueError):
    pass


def parse_hyperparameters(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed hyperparameters from SageMaker's all-strings form, with defaults filled
    in.
    """
    unknown = sorted(set(raw) - set(HYPERPARAMETER_TYPES))
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(HYPERPARAMETER_TYPES))}"
        )
    parsed = dict(DEFAULTS)
    for name, value in raw.items():
        try:
            parsed[name] = HYPERPARAMETER_TYPES[name](value)
        except ValueError:
            raise HyperparameterError(
                f"hyperparameter {name}={value!r} is not a valid "
                f"{HYPERPARAMETER_TYPES[name].__name__}"
            ) from None
    if parsed["num_round"] < 1 or parsed["max_depth"] < 1:
        raise HyperparameterError("num_round and max_depth must be at least 1")
    if not 0 < parsed["eta"] <= 1:
        raise HyperparameterError("eta must be in (0, 1]")
    return parsed
