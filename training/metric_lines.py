"""The training job's metric lines and the definitions that read them.

A training job tells SageMaker its metrics by printing them: SageMaker applies each
``MetricDefinition``'s regex to every log line, records every match, and a tuning job
takes the last value of its objective metric as the job's final objective
(``FinalHyperParameterTuningJobObjectiveMetric``: "the latest objective metric
emitted"). So the job prints one line per boosting round, as SageMaker's built-in
XGBoost does (``[12]<tab>train-auc:0.81<tab>validation-auc:0.80``), and, last, the
validation AUC of the model it keeps (the best round's, with early stopping): that
is the value a tuning job compares.

Light on purpose (no XGBoost import): the pipeline definition declares these metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

OBJECTIVE_METRIC = "validation:auc"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# SageMaker's shape: Name (the metric), Regex (its first group is the value). No
# separator is required between the fields: CloudWatch shows a tab as "#011".
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:auc", "Regex": rf"\[[0-9a-z]+\].*train-auc:{_NUMBER}"},
    {"Name": OBJECTIVE_METRIC, "Regex": rf"\[[0-9a-z]+\].*validation-auc:{_NUMBER}"},
]

log = logging.getLogger("training.metrics")


def round_line(round_index: int, metrics: Mapping[str, Mapping[str, float]]) -> str:
    """``[12]\\ttrain-auc:0.812345\\tvalidation-auc:0.801234`` (every split's
    metrics for one round)."""
    values = "\t".join(
        f"{split}-{name}:{value:.6f}"
        for split, by_name in metrics.items()
        for name, value in by_name.items()
    )
    return f"[{round_index}]\t{values}"


def kept_line(validation_auc: float) -> str:
    """The kept model's validation AUC: the last objective line a job prints."""
    return f"[kept]\tvalidation-auc:{validation_auc:.6f}"
