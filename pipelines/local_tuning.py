"""A hyperparameter tuning job run locally, as SageMaker runs a Tuning step.

A Tuning step's arguments are a ``CreateHyperParameterTuningJob`` request. As on
SageMaker, the job starts up to ``MaxNumberOfTrainingJobs`` training jobs, at most
``MaxParallelTrainingJobs`` at a time, each a ``CreateTrainingJob`` made of the
``TrainingJobDefinition`` with the static hyperparameters and the values the search
strategy proposes for the ranges. Each trial is named ``<tuning job>-<NNN>-<8 hex>``,
the way SageMaker names a tuning job's training jobs. A trial's objective is the last
value its log emits for the objective metric's ``MetricDefinition`` regex (SageMaker
records "the latest objective metric emitted"). The summaries are listed best first,
so ``TrainingJobSummaries[0]`` is the best job (the SDK's ``get_top_model_s3_uri``).

The search: ``Random`` samples each range independently; ``Bayesian`` is Optuna's TPE
(a Bayesian optimisation over the completed trials), its first third of the trials
(at least two) sampled at random, and with parallel trials the running ones counted
as the worst result so far ("constant liar"), so two slots do not try the same point.
Optuna is a kept library that does both, seeded by the request's ``RandomSeed``.
``Grid`` and ``Hyperband`` are refused: the local runner does not run them.

Failed trials do not fail the job, as on SageMaker; it fails when no trial reports
its objective.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.local_jobs import JobFailed, JobResult

STRATEGIES = ("Bayesian", "Random")
# A trial: (training job name, CreateTrainingJob request, its work folder) -> result
RunTrial = Callable[[str, dict[str, Any], Path], JobResult]


@dataclass
class Trial:
    """One training job of the tuning job."""

    name: str
    tuned: dict[str, str]
    status: str = "InProgress"
    objective: float | None = None
    failure_reason: str | None = None
    started_at: str = ""
    ended_at: str = ""
    log_paths: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class TuningResult:
    properties: dict[str, Any]
    trials: list[Trial]
    log_paths: list[Path]


class _Range:
    """One ``ParameterRanges`` entry as an Optuna distribution and back."""

    def __init__(self, kind: str, spec: Mapping[str, Any]) -> None:
        self.name = str(spec["Name"])
        self.kind = kind
        self.values = [str(v) for v in spec.get("Values", [])]
        self.scaling = str(spec.get("ScalingType", "Auto"))
        if kind != "Categorical":
            number = int if kind == "Integer" else float
            try:
                self.low = number(spec["MinValue"])
                self.high = number(spec["MaxValue"])
            except (KeyError, ValueError):
                raise JobFailed(
                    f"the range of {self.name} needs numeric MinValue and MaxValue "
                    f"({kind})"
                ) from None
            if self.low > self.high:
                raise JobFailed(f"the range of {self.name}: MinValue above MaxValue")
            if self.scaling == "Logarithmic" and self.low <= 0:
                raise JobFailed(
                    f"the range of {self.name}: Logarithmic scaling needs values "
                    "above 0"
                )
            if self.scaling == "ReverseLogarithmic" and not (
                kind == "Continuous" and self.low >= 0 and self.high < 1
            ):
                raise JobFailed(
                    f"the range of {self.name}: ReverseLogarithmic scaling needs a "
                    "continuous range within [0, 1)"
                )

    def distribution(self) -> Any:
        from optuna import distributions

        if self.kind == "Categorical":
            return distributions.CategoricalDistribution(self.values)
        log = self.scaling == "Logarithmic"
        if self.kind == "Integer":
            return distributions.IntDistribution(int(self.low), int(self.high), log=log)
        if self.scaling == "ReverseLogarithmic":
            # sampled as 1 - x on a log scale: dense near the upper end
            return distributions.FloatDistribution(
                1 - self.high, 1 - self.low, log=True
            )
        return distributions.FloatDistribution(self.low, self.high, log=log)

    def value(self, sampled: Any) -> str:
        if self.kind == "Categorical":
            return str(sampled)
        if self.kind == "Integer":
            return str(int(sampled))
        if self.scaling == "ReverseLogarithmic":
            sampled = 1 - sampled
        return repr(float(sampled))


def run_tuning_job(
    tuning_job_name: str,
    request: dict[str, Any],
    work_dir: Path,
    run_trial: RunTrial,
    region: str = "us-east-1",
) -> TuningResult:
    """Execute a resolved ``CreateHyperParameterTuningJob`` request.

    Raises:
        JobFailed: the request cannot run here, or no trial reported its objective.
    """
    config = request["HyperParameterTuningJobConfig"]
    definition = request["TrainingJobDefinition"]
    strategy = str(config.get("Strategy", "Bayesian"))
    if strategy not in STRATEGIES:
        raise JobFailed(
            f"tuning strategy {strategy}: the local runner runs "
            f"{' and '.join(STRATEGIES)} tuning jobs"
        )
    limits = config["ResourceLimits"]
    max_jobs = int(limits.get("MaxNumberOfTrainingJobs", 1))
    parallel = min(int(limits["MaxParallelTrainingJobs"]), max_jobs)
    if max_jobs < 1 or parallel < 1:
        raise JobFailed(
            "MaxNumberOfTrainingJobs and MaxParallelTrainingJobs must be at least 1"
        )
    deadline = time.monotonic() + float(limits.get("MaxRuntimeInSeconds", math.inf))
    objective = config["HyperParameterTuningJobObjective"]
    metric, direction = str(objective["MetricName"]), str(objective["Type"])
    pattern = _metric_pattern(definition, metric)
    ranges = _ranges(config.get("ParameterRanges", {}))
    study = _study(strategy, direction, int(config.get("RandomSeed", 0)), max_jobs)
    distributions = {r.name: r.distribution() for r in ranges}

    trials: list[Trial] = []
    running: dict[Future[JobResult], tuple[Any, Trial]] = {}
    with ThreadPoolExecutor(parallel, "trial") as pool:
        while running or (len(trials) < max_jobs and time.monotonic() < deadline):
            while (
                len(trials) < max_jobs
                and len(running) < parallel
                and time.monotonic() < deadline
            ):
                asked = study.ask(distributions)
                tuned = {r.name: r.value(asked.params[r.name]) for r in ranges}
                name = _trial_name(tuning_job_name, len(trials) + 1, tuned)
                trial = Trial(name, tuned)
                trial.started_at = _now()
                trials.append(trial)
                job = _training_request(definition, tuned)
                future = pool.submit(run_trial, trial.name, job, work_dir / trial.name)
                running[future] = (asked, trial)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                asked, trial = running.pop(future)
                _finish(trial, future, pattern)
                if trial.objective is None:
                    from optuna.trial import TrialState

                    study.tell(asked, state=TrialState.FAIL)
                else:
                    study.tell(asked, trial.objective)

    scored = [t for t in trials if t.objective is not None]
    logs = [p for t in trials for p in t.log_paths]
    if not scored:
        reasons = "; ".join(f"{t.name}: {t.failure_reason}" for t in trials)
        raise JobFailed(
            f"no training job of {tuning_job_name} reported {metric}: {reasons}", logs
        )
    sign = 1.0 if direction == "Minimize" else -1.0  # best first
    ranked = sorted(scored, key=lambda t: sign * (t.objective or 0.0)) + [
        t for t in trials if t.objective is None
    ]
    summaries = [
        _summary(t, tuning_job_name, metric, direction, region) for t in ranked
    ]
    failed = sum(t.status == "Failed" for t in trials)
    properties = {
        "HyperParameterTuningJobName": tuning_job_name,
        "HyperParameterTuningJobArn": (
            f"arn:aws:sagemaker:{region}:000000000000:hyper-parameter-tuning-job/"
            f"{tuning_job_name}"
        ),
        "HyperParameterTuningJobStatus": "Completed",
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
        "BestTrainingJob": summaries[0],
        "TrainingJobStatusCounters": {
            "Completed": len(trials) - failed,
            "InProgress": 0,
            "RetryableError": 0,
            "NonRetryableError": failed,
            "Stopped": 0,
        },
        "ObjectiveStatusCounters": {
            "Succeeded": len(scored),
            "Pending": 0,
            "Failed": len(trials) - len(scored),
        },
        "TrainingJobSummaries": summaries,
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "tuning-job.json").write_text(json.dumps(properties, indent=2))
    return TuningResult(properties, trials, logs)


def _study(strategy: str, direction: str, seed: int, max_jobs: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: Any
    if strategy == "Random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=max(2, math.ceil(max_jobs / 3)),
            constant_liar=True,
        )
    return optuna.create_study(
        direction="minimize" if direction == "Minimize" else "maximize",
        sampler=sampler,
    )


def _ranges(spec: Mapping[str, Any]) -> list[_Range]:
    ranges = [
        _Range(kind, entry)
        for kind in ("Integer", "Continuous", "Categorical")
        for entry in spec.get(f"{kind}ParameterRanges", [])
    ]
    if not ranges:
        raise JobFailed("the tuning job has no ParameterRanges to search")
    return ranges


def _metric_pattern(definition: Mapping[str, Any], metric: str) -> re.Pattern[str]:
    """The regex of the objective metric's MetricDefinition."""
    definitions = definition.get("AlgorithmSpecification", {}).get(
        "MetricDefinitions", []
    )
    for entry in definitions:
        if entry.get("Name") == metric:
            try:
                return re.compile(str(entry["Regex"]))
            except re.error as exc:
                raise JobFailed(
                    f"the regex of metric {metric} is invalid: {exc}"
                ) from None
    raise JobFailed(
        f"the objective metric {metric} has no MetricDefinition in the training job "
        "definition"
    )


def objective_value(log_text: str, pattern: re.Pattern[str]) -> float | None:
    """The last value a log emits for ``pattern`` (line by line), or None."""
    value = None
    for line in log_text.splitlines():
        match = pattern.search(line)
        if match:
            try:
                value = float(match.group(1))
            except (IndexError, ValueError):
                continue
    return value


def _training_request(
    definition: Mapping[str, Any], tuned: Mapping[str, str]
) -> dict[str, Any]:
    """A trial's ``CreateTrainingJob`` request from the ``TrainingJobDefinition``."""
    request = {
        key: value
        for key, value in definition.items()
        if key
        not in (
            "StaticHyperParameters",
            "HyperParameterRanges",
            "TuningObjective",
            "DefinitionName",
        )
    }
    request["HyperParameters"] = {
        **definition.get("StaticHyperParameters", {}),
        **tuned,
    }
    return request


def _trial_name(tuning_job_name: str, index: int, tuned: Mapping[str, str]) -> str:
    digest = hashlib.sha256(
        json.dumps([tuning_job_name, index, sorted(tuned.items())]).encode()
    ).hexdigest()[:8]
    return f"{tuning_job_name}-{index:03d}-{digest}"


def _finish(trial: Trial, future: Future[JobResult], pattern: re.Pattern[str]) -> None:
    trial.ended_at = _now()
    try:
        result = future.result()
    except JobFailed as failure:
        trial.status, trial.failure_reason = "Failed", str(failure)
        trial.log_paths = list(failure.log_paths)
        return
    trial.status, trial.log_paths = "Completed", list(result.log_paths)
    text = "\n".join(
        p.read_text(errors="replace") for p in result.log_paths if p.is_file()
    )
    trial.objective = objective_value(text, pattern)
    if trial.objective is None:
        trial.failure_reason = "the job's log emitted no value of the objective metric"


def _summary(
    trial: Trial, tuning_job_name: str, metric: str, direction: str, region: str
) -> dict[str, Any]:
    """The trial as ``HyperParameterTrainingJobSummary``."""
    summary: dict[str, Any] = {
        "TrainingJobName": trial.name,
        "TrainingJobArn": (
            f"arn:aws:sagemaker:{region}:000000000000:training-job/{trial.name}"
        ),
        "TuningJobName": tuning_job_name,
        "CreationTime": trial.started_at,
        "TrainingStartTime": trial.started_at,
        "TrainingEndTime": trial.ended_at,
        "TrainingJobStatus": trial.status,
        "TunedHyperParameters": trial.tuned,
        "ObjectiveStatus": "Succeeded" if trial.objective is not None else "Failed",
    }
    if trial.objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": direction,
            "MetricName": metric,
            "Value": trial.objective,
        }
    if trial.failure_reason:
        summary["FailureReason"] = trial.failure_reason
    return summary


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
