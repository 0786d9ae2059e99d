"""The local runner's tuning job: trials as training jobs, several at a time, a real
search, the best by the objective its log emits, listed best first."""

import copy
import json
import threading
import time

import pytest

from pipelines.local_jobs import JobFailed, JobResult
from pipelines.local_tuning import objective_value, run_tuning_job
from training.metric_lines import METRIC_DEFINITIONS, kept_line, round_line


def request(strategy="Bayesian", jobs=6, parallel=2, seed=7):
    return {
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": jobs,
                "MaxParallelTrainingJobs": parallel,
            },
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize",
                "MetricName": "validation:auc",
            },
            "ParameterRanges": {
                "IntegerParameterRanges": [
                    {"Name": "max_depth", "MinValue": "3", "MaxValue": "8",
                     "ScalingType": "Linear"},
                ],
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.03", "MaxValue": "0.3",
                     "ScalingType": "Logarithmic"},
                    {"Name": "subsample", "MinValue": "0.5", "MaxValue": "0.99",
                     "ScalingType": "ReverseLogarithmic"},
                ],
            },
            "RandomSeed": seed,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "TrainingImage": "local/image",
                "TrainingInputMode": "File",
                "MetricDefinitions": METRIC_DEFINITIONS,
            },
            "StaticHyperParameters": {"feature_set": "churn", "seed": "7"},
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/model"},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"},
            "Environment": {"GIT_COMMIT": "abc1234"},
        },
    }  # fmt: skip


class FakeTrainer:
    """Runs each trial as a "training job" whose log reports an AUC made from its
    hyperparameters (best at max_depth 6, eta 0.1), and records what it was given."""

    def __init__(self, tmp_path, fail=(), silent=(), pause=0.0):
        self.tmp_path, self.fail, self.silent, self.pause = (
            tmp_path,
            fail,
            silent,
            pause,
        )
        self.requests, self.running, self.most_at_once = {}, 0, 0
        self.lock = threading.Lock()

    def auc(self, hp):
        return 0.8 - 0.01 * abs(int(hp["max_depth"]) - 6) - abs(float(hp["eta"]) - 0.1)

    def __call__(self, name, job, folder):
        with self.lock:
            self.requests[name] = job
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.pause)
            index = int(name.split("-")[-2])
            folder.mkdir(parents=True)
            log = folder / "job.log"
            if index in self.fail:
                log.write_text("Traceback: boom\n")
                raise JobFailed("AlgorithmError: boom", [log])
            hp = job["HyperParameters"]
            split = "train" if index in self.silent else "validation"
            lines = [round_line(r, {split: {"auc": 0.5}}) for r in range(3)]
            if index not in self.silent:
                lines.append(kept_line(self.auc(hp)))
            log.write_text("\n".join(lines) + "\n")
            return JobResult(name, {"TrainingJobName": name}, [log])
        finally:
            with self.lock:
                self.running -= 1


def tune(tmp_path, trainer, **kwargs):
    return run_tuning_job("pipelines-abc123-tune", request(**kwargs), tmp_path, trainer)


def test_trials_run_as_training_jobs_with_the_static_and_the_searched_values(tmp_path):
    trainer = FakeTrainer(tmp_path)
    result = tune(tmp_path, trainer, jobs=5)
    assert len(result.trials) == len(trainer.requests) == 5
    for name, job in trainer.requests.items():
        # SageMaker's naming of a tuning job's training jobs
        assert name.startswith("pipelines-abc123-tune-")
        assert len(name.split("-")[-1]) == 8 and len(name.split("-")[-2]) == 3
        hp = job["HyperParameters"]
        assert hp["feature_set"] == "churn" and hp["seed"] == "7"
        assert 3 <= int(hp["max_depth"]) <= 8
        assert 0.03 <= float(hp["eta"]) <= 0.3
        assert 0.5 <= float(hp["subsample"]) <= 0.99
        # a CreateTrainingJob request: the definition's members, no tuning members
        assert "StaticHyperParameters" not in job
        assert job["Environment"] == {"GIT_COMMIT": "abc1234"}
        assert job["AlgorithmSpecification"]["TrainingImage"] == "local/image"


def test_the_summaries_are_best_first_and_the_best_is_the_highest_objective(tmp_path):
    trainer = FakeTrainer(tmp_path)
    props = tune(tmp_path, trainer, jobs=6).properties
    summaries = props["TrainingJobSummaries"]
    values = [
        s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries
    ]
    assert values == sorted(values, reverse=True)
    best = summaries[0]
    assert props["BestTrainingJob"] == best
    expected = trainer.auc(trainer.requests[best["TrainingJobName"]]["HyperParameters"])
    assert best["FinalHyperParameterTuningJobObjectiveMetric"][
        "Value"
    ] == pytest.approx(expected, abs=1e-6)
    assert (
        best["TunedHyperParameters"]["max_depth"]
        == (trainer.requests[best["TrainingJobName"]]["HyperParameters"]["max_depth"])
    )
    assert props["HyperParameterTuningJobStatus"] == "Completed"
    written = json.loads((tmp_path / "tuning-job.json").read_text())
    assert written["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]


def test_no_more_than_max_parallel_trials_run_at_once_and_they_do_overlap(tmp_path):
    trainer = FakeTrainer(tmp_path, pause=0.3)
    tune(tmp_path, trainer, jobs=6, parallel=2)
    assert trainer.most_at_once == 2
    one = FakeTrainer(tmp_path / "one", pause=0.05)
    tune(tmp_path / "one", one, jobs=3, parallel=1)
    assert one.most_at_once == 1


def test_the_objective_is_the_last_value_the_log_emits():
    pattern = __import__("re").compile(METRIC_DEFINITIONS[1]["Regex"])
    log = "\n".join(
        [
            round_line(0, {"train": {"auc": 0.9}, "validation": {"auc": 0.70}}),
            round_line(1, {"train": {"auc": 0.95}, "validation": {"auc": 0.72}}),
            "INFO something else validation-auc:0.99 without a round",
            kept_line(0.71),
        ]
    )
    assert objective_value(log, pattern) == pytest.approx(0.71)
    # as CloudWatch shows a tab
    assert objective_value("[3]#011validation-auc:0.6", pattern) == pytest.approx(0.6)
    assert objective_value("no metrics here", pattern) is None


def test_failed_trials_do_not_fail_the_job_and_are_listed_last(tmp_path):
    trainer = FakeTrainer(tmp_path, fail={2}, silent={3})
    props = tune(tmp_path, trainer, jobs=4, parallel=1).properties
    summaries = props["TrainingJobSummaries"]
    assert [s["ObjectiveStatus"] for s in summaries] == ["Succeeded"] * 2 + [
        "Failed"
    ] * 2
    failed = {s["TrainingJobName"].split("-")[-2]: s for s in summaries[2:]}
    assert failed["002"]["TrainingJobStatus"] == "Failed"
    assert "boom" in failed["002"]["FailureReason"]
    assert failed["003"]["TrainingJobStatus"] == "Completed"
    assert "no value of the objective" in failed["003"]["FailureReason"]
    assert props["ObjectiveStatusCounters"] == {
        "Succeeded": 2,
        "Pending": 0,
        "Failed": 2,
    }
    assert props["TrainingJobStatusCounters"]["NonRetryableError"] == 1


def test_the_job_fails_when_no_trial_reports_its_objective(tmp_path):
    trainer = FakeTrainer(tmp_path, fail={1}, silent={2})
    with pytest.raises(JobFailed, match="no training job .* reported validation:auc"):
        tune(tmp_path, trainer, jobs=2)


@pytest.mark.parametrize("strategy", ["Bayesian", "Random"])
def test_the_search_is_reproducible_by_its_seed(tmp_path, strategy):
    def searched(folder, seed):
        trainer = FakeTrainer(folder)
        tune(folder, trainer, strategy=strategy, jobs=4, parallel=1, seed=seed)
        return [
            trainer.requests[n]["HyperParameters"]["eta"]
            for n in sorted(trainer.requests)
        ]

    first = searched(tmp_path / "a", 7)
    assert first == searched(tmp_path / "b", 7)
    assert first != searched(tmp_path / "c", 8)
    assert len(set(first)) == 4  # a search, not one point again


def test_bayesian_search_does_better_than_its_random_start(tmp_path):
    """After its random start, TPE proposes points near the best so far: the best of
    20 trials beats the best of the first 7 (its random start)."""
    trainer = FakeTrainer(tmp_path)
    result = tune(tmp_path, trainer, jobs=20, parallel=1)
    by_index = sorted(result.trials, key=lambda t: t.name.split("-")[-2])
    start = max(t.objective for t in by_index[:7])
    assert max(t.objective for t in by_index) > start


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Strategy": "Hyperband"}, "runs Bayesian and Random"),
        ({"ParameterRanges": {}}, "no ParameterRanges"),
        (
            {"HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                   "MetricName": "test:auc"}},
            "test:auc has no MetricDefinition",
        ),
    ],
)  # fmt: skip
def test_a_request_the_local_runner_cannot_run_fails_before_any_trial(
    tmp_path, change, message
):
    trainer = FakeTrainer(tmp_path)
    bad = request()
    bad["HyperParameterTuningJobConfig"].update(change)
    with pytest.raises(JobFailed, match=message):
        run_tuning_job("pipelines-abc123-tune", bad, tmp_path, trainer)
    assert trainer.requests == {}


def test_a_tuning_steps_cache_key_is_sagemakers():
    """HyperParameterTuningJobConfig and five members of TrainingJobDefinition count;
    its Environment and OutputDataConfig do not (SageMaker's default cache keys)."""
    from pipelines.step_cache import StepCache

    step = {"Type": "Tuning", "CacheConfig": {"Enabled": True}}
    base = request()
    key = StepCache.key(step, base)
    assert StepCache.applies_to(step)

    def changed(edit):
        other = copy.deepcopy(base)
        edit(other)
        return StepCache.key(step, other) != key

    job = "TrainingJobDefinition"
    assert not changed(lambda r: r[job]["Environment"].update(GIT_COMMIT="def5678"))
    assert not changed(lambda r: r[job]["OutputDataConfig"].update(S3OutputPath="x"))
    assert changed(lambda r: r[job]["StaticHyperParameters"].update(seed="8"))
    assert changed(
        lambda r: r[job]["AlgorithmSpecification"].update(TrainingImage="other")
    )
    limits = ("HyperParameterTuningJobConfig", "ResourceLimits")
    assert changed(lambda r: r[limits[0]][limits[1]].update(MaxNumberOfTrainingJobs=9))
    assert changed(lambda r: r[limits[0]].update(Strategy="Random"))


def test_a_job_started_after_the_runner_stopped_its_jobs_is_killed_at_once():
    """An interrupted runner kills its jobs; a tuning job still starting trials must
    not leave a new one running after that."""
    import subprocess
    import sys

    from pipelines.local_jobs import RunningJobs

    def sleeper():
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    jobs = RunningJobs()
    running = sleeper()
    jobs.add(running)
    jobs.kill_all()
    assert running.poll() is not None
    late = sleeper()
    jobs.add(late)
    assert late.poll() is not None
