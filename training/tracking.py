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

from pipelines.step_names import TRAIN, TUNE
from training.model import TrainedModel, save_model

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


# SageMaker names a tuning job's training jobs "<tuning job>-<NNN>-<8 hex digits>"
_TUNING_TRIAL = re.compile(
    r"^(?P<tuning>[A-Za-z0-9-]+)-(?P<index>[0-9]{3})-[0-9a-f]{8}$"
)


def tuning_trial(training_job_name: str) -> tuple[str, int] | None:
    """(tuning job, trial number) when a tuning job started this job, else None."""
    match = _TUNING_TRIAL.match(training_job_name)
    return (match["tuning"], int(match["index"])) if match else None


def log_training_run(
    model: TrainedModel, tags: dict[str, str] | None = None
) -> str | None:
    """Log params, per-round metrics and the model; return the run id (None if off).

    ``tags`` (the git commit, the data window) go on the run beside the execution id.
    A tuning job's trial is a child run of the tuning job's run (``tune-<execution>``,
    made by the first trial to log), and adds its objective to that run's
    ``trial_validation_auc`` series, one step per trial.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        log.info("MLFLOW_TRACKING_URI is not set: not tracking this run")
        return None
    import mlflow

    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "churn")
    job_name = os.environ.get("TRAINING_JOB_NAME", "")
    execution_id = pipeline_execution_id(job_name)
    location = os.environ.get("MLFLOW_ARTIFACT_LOCATION")
    if location and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=location)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    trial = tuning_trial(job_name)
    run_name, parent, step = f"train-{execution_id}", None, TRAIN
    if trial is not None:
        parent = _tuning_run(experiment_id, trial[0], execution_id)
        run_name, step = f"trial-{trial[1]:03d}-{execution_id}", TUNE
        mlflow.MlflowClient().log_metric(
            parent,
            "trial_validation_auc",
            model.metadata["best_validation_auc"],
            step=trial[1],
        )
    with mlflow.start_run(run_name=run_name, parent_run_id=parent) as run:
        mlflow.set_tags(
            {
                "pipeline_execution_id": execution_id,
                "step": step,
                **(
                    {"tuning_job": trial[0], "trial": str(trial[1])}
                    if trial is not None
                    else {}
                ),
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


def _tuning_run(experiment_id: str, tuning_job: str, execution_id: str) -> str:
    """The tuning job's run, made by whichever trial logs first.

    Trials start together, so two may find none and each make one: each then looks
    again and all keep the oldest (start time, then id); a trial whose own run lost
    deletes it.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    query = f"tags.tuning_job = '{tuning_job}' and tags.step = 'TuningJob'"

    def oldest() -> str | None:
        runs = client.search_runs([experiment_id], filter_string=query)
        if not runs:
            return None
        first = min(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return str(first.info.run_id)

    found = oldest()
    if found is not None:
        return found
    mine = client.create_run(
        experiment_id,
        run_name=f"tune-{execution_id}",
        tags={
            "pipeline_execution_id": execution_id,
            "step": "TuningJob",
            "tuning_job": tuning_job,
        },
    ).info.run_id
    client.set_terminated(mine)  # a record of the trials, not a job of its own
    kept = oldest() or mine
    if kept != mine:
        client.delete_run(mine)
    return kept


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
