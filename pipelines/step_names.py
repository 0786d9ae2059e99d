"""The names of the pipelines' steps and of the property files they keep.

A step's name is how the definition, the local runner, the CLI's summary, the tests
and SageMaker's console refer to it; it changes the definition (and SageMaker's cache
keys), so it is written once, here.
"""

from __future__ import annotations

# --- the training pipeline (pipelines.definition) -------------------------------------
# Preflight checks the parameters and fingerprints the source data (never cached: its
# fingerprint is Extract's argument, so cached steps mean the same data).
PREFLIGHT, PREFLIGHT_REPORT = "Preflight", "PreflightReport"
EXTRACT = "Extract"
# Train, or Tune in its place when training.tuning is enabled: a hyperparameter tuning
# job whose best training job's model feeds the steps after it.
TRAIN, TUNE = "Train", "Tune"
# The training data's statistics and constraints (Model Monitor's format), registered
# with the model as its drift-check baselines (monitoring.baseline).
BASELINE = "Baseline"
EVALUATE, EVALUATION_REPORT = "Evaluate", "EvaluationReport"
# The registration gate (processing.gate): the absolute AUC rule and the champion rule.
GATE, GATE_REPORT = "Gate", "GateReport"
# CheckAuc applies the gate's verdict; AucTooLow is its FailStep, whose message names
# the rule.
CHECK_AUC, REGISTER, AUC_TOO_LOW = "CheckAuc", "Register", "AucTooLow"
# Track puts the registered package's ARN on the execution's MLflow run.
TRACK = "Track"
CHECK_APPROVAL, CREATE_MODEL, ENDPOINT_CONFIG, DEPLOY = (
    "CheckApproval",
    "CreateModel",
    "EndpointConfig",
    "Deploy",
)
CHECK_WRITEBACK, WRITEBACK, WRITEBACK_REPORT = (
    "CheckWriteBack",
    "WriteBack",
    "WritebackReport",
)

# --- the monitoring pipeline (monitoring.pipeline) ------------------------------------
DRIFT_CHECK, DRIFT_REPORT = "DriftCheck", "DriftReport"
CHECK_DRIFT, RETRAIN = "CheckDrift", "Retrain"
