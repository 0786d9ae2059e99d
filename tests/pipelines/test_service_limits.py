"""SageMaker's service limits, which botocore's validator leaves to the service.

Each test mutates one thing in the golden dev definition (no SageMaker SDK import).
"""

import copy
import json
from functools import cache
from pathlib import Path

import pytest

from pipelines.validation import definition_problems

GOLDEN = Path(__file__).parent / "golden" / "dev.json"
EXECUTION_ID = {"Get": "Execution.PipelineExecutionId"}


@cache
def _golden():
    return json.loads(GOLDEN.read_text())


def golden():
    return copy.deepcopy(_golden())


def step(definition, name):
    def walk(steps):
        for s in steps:
            yield s
            if s["Type"] == "Condition":
                yield from walk(s["Arguments"]["IfSteps"])
                yield from walk(s["Arguments"]["ElseSteps"])

    return next(s for s in walk(definition["Steps"]) if s["Name"] == name)


def arguments(definition, name):
    return step(definition, name)["Arguments"]


def problems_of(definition, name):
    """The problems reported for step ``name`` (the message names the step)."""
    return [p for p in definition_problems(definition) if p.startswith(f"step {name}:")]


def test_the_golden_definition_has_no_problems():
    assert definition_problems(golden()) == []


def test_botocore_does_not_check_maximums():
    # why these checks exist: botocore 1.44's ParamValidator checks only minimums
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    request = {
        "ProcessingJobName": "x" * 100,
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1000,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "AppSpecification": {"ImageUri": "image"},
        "RoleArn": "arn:aws:iam::000000000000:role/x",
        "Environment": {f"K{i}": "v" * 300 for i in range(101)},
    }
    shape = model.operation_model("CreateProcessingJob").input_shape
    assert not ParamValidator().validate(request, shape).has_errors()


def test_a_definition_over_the_create_pipeline_maximum():
    definition = golden()
    definition["Metadata"] = {"padding": "x" * 1_100_000}
    size = len(json.dumps(definition))
    assert definition_problems(definition) == [
        f"the definition is {size:,} characters; SageMaker allows at most 1,048,576"
        " (CreatePipeline PipelineDefinition)"
    ]


def test_more_than_ten_processing_inputs():
    definition = golden()
    inputs = arguments(definition, "Baseline")["ProcessingInputs"]
    for i in range(11 - len(inputs)):
        extra = copy.deepcopy(inputs[0])
        extra["InputName"] = f"extra{i}"
        extra["S3Input"]["LocalPath"] = f"/opt/ml/processing/extra{i}"
        inputs.append(extra)
    assert problems_of(definition, "Baseline") == [
        "step Baseline: ProcessingInputs has 11 entries; SageMaker allows at most 10"
        " (CreateProcessingJob ProcessingInputs)"
    ]


def test_more_than_a_hundred_environment_entries_in_processing():
    definition = golden()
    environment = arguments(definition, "Extract")["Environment"]
    environment.update({f"MLOPS_X{i}": "1" for i in range(101 - len(environment))})
    assert problems_of(definition, "Extract") == [
        "step Extract: Environment has 101 entries; SageMaker allows at most 100"
        " (CreateProcessingJob ProcessingEnvironmentMap)"
    ]


def test_more_than_a_hundred_environment_entries_in_a_nested_step():
    definition = golden()  # WriteBack sits inside two Condition steps
    environment = arguments(definition, "WriteBack")["Environment"]
    environment.update({f"MLOPS_X{i}": "1" for i in range(150)})
    assert any(
        f"Environment has {len(environment)} entries; SageMaker allows at most 100" in p
        for p in problems_of(definition, "WriteBack")
    )


def test_environment_values_have_a_maximum_per_job_type():
    definition = golden()
    arguments(definition, "Extract")["Environment"]["MLOPS_X"] = "v" * 300
    arguments(definition, "Train")["Environment"]["MLOPS_X"] = "v" * 300
    assert problems_of(definition, "Extract") == [
        "step Extract: Environment value of MLOPS_X is 300 characters; SageMaker"
        " allows at most 256 (CreateProcessingJob ProcessingEnvironmentValue)"
    ]
    assert problems_of(definition, "Train") == []  # 512 for training


def test_a_training_environment_value_over_512():
    definition = golden()
    arguments(definition, "Train")["Environment"]["MLOPS_X"] = "v" * 600
    assert problems_of(definition, "Train") == [
        "step Train: Environment value of MLOPS_X is 600 characters; SageMaker"
        " allows at most 512 (CreateTrainingJob TrainingEnvironmentValue)"
    ]


def test_an_environment_key_over_the_maximum():
    definition = golden()
    arguments(definition, "Evaluate")["Environment"]["K" * 257] = "1"
    [problem] = problems_of(definition, "Evaluate")
    assert "Environment key KKK" in problem
    assert "is 257 characters; SageMaker allows at most 256" in problem
    assert "(CreateProcessingJob ProcessingEnvironmentKey)" in problem


def test_an_environment_key_outside_the_pattern():
    definition = golden()
    arguments(definition, "Train")["Environment"]["MLOPS-X"] = "1"
    [problem] = problems_of(definition, "Train")
    assert "Environment key MLOPS-X 'MLOPS-X' does not match the pattern" in problem
    assert "[a-zA-Z_][a-zA-Z0-9_]*" in problem
    assert "(CreateTrainingJob TrainingEnvironmentKey)" in problem


def test_an_environment_value_made_of_a_reference_is_not_measured():
    definition = golden()  # a parameter's value is only known at run time
    arguments(definition, "Extract")["Environment"]["MLOPS_X"] = {
        "Get": "Parameters.AsOfDate"
    }
    assert definition_problems(definition) == []


def test_more_than_a_hundred_hyperparameters():
    definition = golden()
    hyperparameters = arguments(definition, "Train")["HyperParameters"]
    hyperparameters.update({f"x{i}": "1" for i in range(101 - len(hyperparameters))})
    assert problems_of(definition, "Train") == [
        "step Train: HyperParameters has 101 entries; SageMaker allows at most 100"
        " (CreateTrainingJob HyperParameters)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("x" * 257, "1", "is 257 characters; SageMaker allows at most 256"),
        ("x", "1" * 2501, "is 2,501 characters; SageMaker allows at most 2,500"),
    ],
)
def test_hyperparameter_keys_and_values_have_a_maximum(key, value, expected):
    definition = golden()
    arguments(definition, "Train")["HyperParameters"][key] = value
    [problem] = problems_of(definition, "Train")
    assert expected in problem


def test_a_joined_endpoint_config_name_is_measured_with_the_execution_id():
    definition = golden()
    name = arguments(definition, "EndpointConfig")["EndpointConfigName"]
    name["Std:Join"]["Values"][0] = "churn-endpoint-" + "x" * 45  # + "-" + 12
    assert problems_of(definition, "EndpointConfig") == [
        "step EndpointConfig: EndpointConfigName is 73 characters at its longest;"
        " SageMaker allows at most 63 (CreateEndpointConfig EndpointConfigName)"
    ]


def test_a_joined_name_of_exactly_63_characters_fits():
    definition = golden()
    name = arguments(definition, "EndpointConfig")["EndpointConfigName"]
    name["Std:Join"]["Values"][0] = "e" * 50  # 50 + "-" + 12 = 63
    assert definition_problems(definition) == []


def test_a_joined_name_outside_the_pattern():
    definition = golden()
    name = arguments(definition, "EndpointConfig")["EndpointConfigName"]
    name["Std:Join"]["On"] = "_"
    [problem] = problems_of(definition, "EndpointConfig")
    assert "EndpointConfigName 'churn-endpoint-dev_aaaaaaaaaaaa'" in problem
    assert "does not match the pattern" in problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("e" * 64, "EndpointName is 64 characters; SageMaker allows at most 63"),
        ("churn_endpoint", "EndpointName 'churn_endpoint' does not match"),
    ],
)
def test_a_literal_endpoint_name(name, expected):
    definition = golden()
    arguments(definition, "Deploy")["EndpointName"] = name
    [problem] = problems_of(definition, "Deploy")
    assert expected in problem
    assert problem.endswith("(CreateEndpoint EndpointName)")


def test_a_literal_model_name_outside_the_pattern():
    definition = golden()
    arguments(definition, "CreateModel")["ModelName"] = "churn_model"
    [problem] = problems_of(definition, "CreateModel")
    assert "ModelName 'churn_model' does not match" in problem
    assert problem.endswith("(CreateModel ModelName)")


def test_a_job_name_given_in_the_definition_is_checked():
    # PipelineDefinitionConfig(use_custom_job_prefix=True) puts the name in the
    # definition; CreatePipeline refuses one over 63 (sagemaker-python-sdk #5099)
    definition = golden()
    arguments(definition, "Train")["TrainingJobName"] = "churn-" + "a" * 85
    assert problems_of(definition, "Train") == [
        "step Train: TrainingJobName is 91 characters; SageMaker allows at most 63"
        " (CreateTrainingJob TrainingJobName)"
    ]


def test_a_long_step_name_does_not_make_a_long_job_name():
    definition = golden()  # SageMaker cuts the step name in the names it makes
    step(definition, "Extract")["Name"] = "E" * 64
    assert not any("JobName" in p for p in definition_problems(definition))


def test_a_container_argument_over_the_maximum():
    definition = golden()
    arguments(definition, "Gate")["AppSpecification"]["ContainerArguments"].append(
        "x" * 300
    )
    [problem] = problems_of(definition, "Gate")
    assert "AppSpecification.ContainerArguments[8] is 300 characters" in problem
    assert "at most 256 (CreateProcessingJob ContainerArgument)" in problem


def test_an_integer_over_the_maximum():
    definition = golden()
    cluster = arguments(definition, "Evaluate")["ProcessingResources"]["ClusterConfig"]
    cluster["InstanceCount"] = 101
    assert problems_of(definition, "Evaluate") == [
        "step Evaluate: ProcessingResources.ClusterConfig.InstanceCount is 101;"
        " SageMaker allows at most 100 (CreateProcessingJob ProcessingInstanceCount)"
    ]


def test_a_joined_s3_uri_is_measured_with_the_execution_id():
    definition = golden()
    output = arguments(definition, "Evaluate")["ProcessingOutputConfig"]["Outputs"][0]
    output["S3Output"]["S3Uri"]["Std:Join"]["Values"][1] = "x" * 1000
    [problem] = problems_of(definition, "Evaluate")
    # "s3://mlops-dev-artifacts/churn" (30) + "/" + 12 + "/" + 1000
    assert "S3Output.S3Uri is 1,044 characters at its longest" in problem
    assert "at most 1,024 (CreateProcessingJob S3Uri)" in problem


def test_the_literal_part_of_a_join_with_a_step_property_is_measured():
    definition = golden()
    s3_input = arguments(definition, "Gate")["ProcessingInputs"][0]["S3Input"]
    s3_input["S3Uri"] = {
        "Std:Join": {"On": "/", "Values": [s3_input["S3Uri"], "x" * 1030]}
    }
    [problem] = problems_of(definition, "Gate")
    assert "S3Input.S3Uri is at least 1,031 characters" in problem
    assert "at most 1,024 (CreateProcessingJob S3Uri)" in problem


def test_a_literal_s3_uri_outside_the_pattern():
    definition = golden()
    arguments(definition, "Train")["OutputDataConfig"]["S3OutputPath"] = "gs://b/m"
    [problem] = problems_of(definition, "Train")
    assert "OutputDataConfig.S3OutputPath 'gs://b/m' does not match" in problem


def test_customer_metadata_entries_in_a_model_package():
    definition = golden()
    metadata = arguments(definition, "Register")["CustomerMetadataProperties"]
    metadata.update({f"extra_{i}": "1" for i in range(51 - len(metadata))})
    assert problems_of(definition, "Register") == [
        "step Register: CustomerMetadataProperties has 51 entries; SageMaker allows"
        " at most 50 (CreateModelPackage CustomerMetadataMap)"
    ]
