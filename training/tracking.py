"""MLflow tracking for the train step.

Active only when ``MLFLOW_TRACKING_URI`` is in the job's environment (the pipeline
definition sets it: a SQLite store in the state folder locally, a SageMaker managed
MLflow tracking server on AWS). ``MLFLOW_ARTIFACT_LOCATION``, set for the local store,
is where a new experiment keeps its artifacts. Hyperparameters are the only parameters
logged, so no setting or secret of the environment can reach MLflow.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from training.train import TrainedModel, save_model

log = logging.getLogger("training.tracking")


# SageMaker Pipelines names the jobs it starts "pipelines-<execution id>-<step>-...";
# the local runner names them the same way.
_PIPELINE_JOB = re.compile(r"^pipelines-([a-z0-9]+)-", re.IGNORECASE)


def pipeline_execution_id(training_job_name: str) -> str:
    """The pipeline execution that started this job, or "manual" outside a pipeline.

    Read from the job's name rather than passed in the environment: the environment
    is part of SageMaker's step cache key, and a per-execution value there would make
    every Train step a cache miss.
    """
    match = _PIPELINE_JOB.match(training_job_name)
    return match.group(1).lower() if match else "manual"


def log_training_run(
    model: TrainedModel, tags: dict[str, str] | None = None
) -> str | None:
    """Log params, per-round metrics and the model; return the run id (None if off).

    ``tags`` (the git commit, the data window) go on the run beside the execution id.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        log.info("MLFLOW_TRACKING_URI is not set: not tracking this run")
        return None
    import mlflow

    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "churn")
    execution_id = pipeline_execution_id(os.environ.get("TRAINING_JOB_NAME", ""))
    location = os.environ.get("MLFLOW_ARTIFACT_LOCATION")
    if location and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"train-{execution_id}") as run:
        mlflow.set_tags(
            {
                "pipeline_execution_id": execution_id,
                "step": "Train",
                # the flavour below is the booster; what the endpoint serves (SCORE)
                # is its output through artifact/calibration.json
                "model_output": "the booster's raw score; SCORE = "
                + str(model.metadata.get("score", "the raw score")),
                **(tags or {}),
            }
        )
        mlflow.log_params(model.hyperparameters)
        _log_history(run.info.run_id, model.history)
        mlflow.log_metrics(
            {
                "best_iteration": model.best_iteration,
                "best_validation_auc": model.metadata["best_validation_auc"],
            }
        )
        import mlflow.xgboost

        # the xgboost flavour (loadable with mlflow.xgboost.load_model / pyfunc),
        # trimmed to the best iteration like the served artifact
        mlflow.xgboost.log_model(
            model.booster[: model.best_iteration + 1],
            name="model",
            pip_requirements=_pip_requirements(),
        )
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, Path(tmp))
            mlflow.log_artifacts(tmp, artifact_path="artifact")
        return str(run.info.run_id)


def _log_history(run_id: str, history: dict[str, dict[str, list[float]]]) -> None:
    """Every round's metrics in batches: one store call per 1,000, not one per value."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{split}_{name}", value, now, step)
        for split, by_name in history.items()
        for name, values in by_name.items()
        for step, value in enumerate(values)
    ]
    client = MlflowClient()
    for start in range(0, len(metrics), 1000):  # log_batch's limit per call
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _pip_requirements() -> list[str]:
    """What loading the logged model needs, pinned to the versions that trained it.

    Given explicitly: MLflow would otherwise infer them by importing the model in a
    subprocess, which costs seconds per run and can pick up unrelated packages.
    """
    import numpy
    import scipy
    import xgboost

    # by module version: the wheel here may be xgboost-cpu, the package users pin is
    # xgboost
    return [f"{m.__name__}=={m.__version__}" for m in (xgboost, numpy, scipy)]
