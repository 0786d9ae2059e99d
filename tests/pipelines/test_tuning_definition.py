"""The tuning step in the definition (training.tuning.enabled): a
CreateHyperParameterTuningJob request SageMaker accepts, whose training jobs are the
Train step's, and whose best job's model feeds Evaluate and Register."""

import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.parameters import ParameterError, check_parameters
from pipelines.validation import definition_problems
from stack.config import TuningConfig
from training.metric_lines import OBJECTIVE_METRIC

GOLDEN = Path(__file__).with_name("golden")
# tests/pipelines/test_golden.py keeps both files equal to what the build makes
PLAIN = json.loads((GOLDEN / "dev.json").read_text())
TUNED = json.loads((GOLDEN / "dev-tuning.json").read_text())
BEST_MODEL = "Steps.Tune.TrainingJobSummaries[0].TrainingJobName"


def all_steps(steps):
    for s in steps:
        yield s
        yield from all_steps(s.get("Arguments", {}).get("IfSteps", []))
        yield from all_steps(s.get("Arguments", {}).get("ElseSteps", []))


def step(definition, name):
    return next(s for s in all_steps(definition["Steps"]) if s["Name"] == name)


def gets(node):
    if isinstance(node, dict):
        if "Get" in node:
            yield node["Get"]
        for value in node.values():
            yield from gets(value)
    elif isinstance(node, list):
        for value in node:
            yield from gets(value)


def test_the_trials_are_the_train_steps_jobs():
    tune = step(TUNED, "Tune")
    assert tune["Type"] == "Tuning"
    assert not any(s["Name"] == "Train" for s in all_steps(TUNED["Steps"]))
    job = tune["Arguments"]["TrainingJobDefinition"]
    train = step(PLAIN, "Train")["Arguments"]
    # the SDK's tuner drops the network and encryption settings; the build puts back
    # the Train step's
    for member in (
        "VpcConfig",
        "EnableNetworkIsolation",
        "EnableInterContainerTrafficEncryption",
        "ResourceConfig",
        "StoppingCondition",
        "Environment",
        "RoleArn",
    ):
        assert job[member] == train[member], member
    # the trials' models under one prefix with no execution id in it, so a cached
    # Tune step hands on the URI of its own execution's best model
    output = job["OutputDataConfig"]
    assert output["S3OutputPath"] == "s3://mlops-dev-artifacts/churn/tuning"
    assert output["KmsKeyId"] == train["OutputDataConfig"]["KmsKeyId"]
    image = job["AlgorithmSpecification"]["TrainingImage"]
    assert image == train["AlgorithmSpecification"]["TrainingImage"]
    assert [c["DataSource"] for c in job["InputDataConfig"]] == [
        c["DataSource"] for c in train["InputDataConfig"]
    ]
    # every hyperparameter is either static or searched, none twice
    ranges = tune["Arguments"]["HyperParameterTuningJobConfig"]["ParameterRanges"]
    searched = {r["Name"] for kind in ranges.values() for r in kind}
    static = set(job["StaticHyperParameters"])
    assert searched == {
        "max_depth",
        "eta",
        "num_round",
        "min_child_weight",
        "subsample",
    }
    assert not searched & static
    assert searched | static == set(train["HyperParameters"])
    assert tune["CacheConfig"] == step(PLAIN, "Train")["CacheConfig"]


def test_the_objective_is_validation_auc_read_from_the_training_log():
    tune = step(TUNED, "Tune")["Arguments"]
    config = tune["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "MetricName": OBJECTIVE_METRIC,
        "Type": "Maximize",
    }
    names = [
        m["Name"]
        for m in tune["TrainingJobDefinition"]["AlgorithmSpecification"][
            "MetricDefinitions"
        ]
    ]
    assert OBJECTIVE_METRIC in names
    assert config["Strategy"] == "Bayesian" and config["RandomSeed"] == 7


def test_the_job_limits_are_pipeline_parameters_and_the_searched_ones_are_not():
    declared = {p["Name"]: p for p in TUNED["Parameters"]}
    limits = step(TUNED, "Tune")["Arguments"]["HyperParameterTuningJobConfig"][
        "ResourceLimits"
    ]
    assert limits == {
        "MaxNumberOfTrainingJobs": {"Get": "Parameters.MaxNumberOfTrainingJobs"},
        "MaxParallelTrainingJobs": {"Get": "Parameters.MaxParallelTrainingJobs"},
    }
    assert declared["MaxNumberOfTrainingJobs"]["DefaultValue"] == 8
    assert declared["MaxParallelTrainingJobs"]["DefaultValue"] == 2
    # a parameter the tuning job overrides would do nothing: not declared
    assert not {"MaxDepth", "LearningRate", "NumRound"} & set(declared)
    assert {"MaxDepth", "LearningRate", "NumRound"} <= {
        p["Name"] for p in PLAIN["Parameters"]
    }
    assert "MaxNumberOfTrainingJobs" not in {p["Name"] for p in PLAIN["Parameters"]}


def test_evaluate_baseline_and_register_take_the_best_jobs_model():
    for name in ("Evaluate", "Baseline", "Register"):
        assert BEST_MODEL in set(gets(step(TUNED, name))), name
        assert not any("Steps.Train" in g for g in gets(step(TUNED, name)))
    evaluate = step(TUNED, "Evaluate")["Arguments"]["ProcessingInputs"]
    uri = next(i for i in evaluate if i["InputName"] == "model")["S3Input"]["S3Uri"]
    assert uri["Std:Join"]["Values"] == [
        "s3://mlops-dev-artifacts/churn/tuning",
        {"Get": BEST_MODEL},
        "output",
        "model.tar.gz",
    ]


def test_the_tuning_definition_is_valid_and_a_broken_one_is_refused():
    assert definition_problems(TUNED) == []
    broken = copy.deepcopy(TUNED)
    config = step(broken, "Tune")["Arguments"]["HyperParameterTuningJobConfig"]
    config["Strategy"] = "Sideways"
    config["ResourceLimits"]["MaxParallelTrainingJobs"] = 0
    job = step(broken, "Tune")["Arguments"]["TrainingJobDefinition"]
    job["AlgorithmSpecification"]["MetricDefinitions"][0]["Regex"] = "x" * 501
    problems = " ".join(definition_problems(broken))
    assert "CreateHyperParameterTuningJob" in problems
    assert "Sideways" in problems and "MaxParallelTrainingJobs" in problems
    # a service limit botocore's validator leaves out
    assert "Regex is 501 characters; SageMaker allows at most 500" in problems


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"feature_set": {"min": 1, "max": 2}}, "not a numeric hyperparameter"),
        ({"max_depth": {"min": 2.5, "max": 6}}, "integer"),
        ({"eta": {"min": 0.3, "max": 0.1}}, "must be below max"),
        ({"eta": {"min": 0, "max": 0.3, "scaling": "Logarithmic"}}, "above 0"),
        ({"subsample": {"min": 0.5, "max": 1.5, "scaling": "ReverseLogarithmic"}},
         "0 <= min < max < 1"),
        ({}, "at least one range"),
    ],
)  # fmt: skip
def test_a_bad_tuning_range_is_a_configuration_error(ranges, message):
    with pytest.raises(ValidationError, match=message):
        TuningConfig(
            enabled=True,
            ranges=ranges,
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MaxNumberOfTrainingJobs", "0"),
        ("MaxNumberOfTrainingJobs", "501"),
        ("MaxParallelTrainingJobs", "0"),
        ("MaxParallelTrainingJobs", "two"),
    ],
)
def test_a_bad_job_limit_is_refused_before_any_work(name, value):
    with pytest.raises(ParameterError, match=name):
        check_parameters({name: value})
