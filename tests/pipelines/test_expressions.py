import pytest

from pipelines.expressions import (
    EvaluationContext,
    ExpressionError,
    references,
    resolve,
)


@pytest.fixture
def context():
    return EvaluationContext(
        parameters={"AucThreshold": 0.7, "AsOfDate": "2026-03-31"},
        execution={"PipelineExecutionId": "abc123"},
        steps={
            "Extract": {
                "ProcessingOutputConfig": {
                    "Outputs": [
                        {
                            "OutputName": "train",
                            "S3Output": {"S3Uri": "s3://bkt/train"},
                        },
                        {"OutputName": "test", "S3Output": {"S3Uri": "s3://bkt/test"}},
                    ]
                }
            },
            "Train": {"ModelArtifacts": {"S3ModelArtifacts": "s3://bkt/model.tar.gz"}},
        },
        property_files={
            "Evaluate": {
                "EvaluationReport": {
                    "binary_classification_metrics": {"auc": {"value": 0.81}},
                    "list": [{"v": 1}, {"v": 2}],
                }
            }
        },
    )


def test_gets_joins_and_json_gets(context):
    value = {
        "uri": {
            "Get": "Steps.Extract.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"
        },
        "model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
        "path": {
            "Std:Join": {
                "On": "/",
                "Values": [
                    "s3://bkt",
                    {"Get": "Execution.PipelineExecutionId"},
                    {"Get": "Parameters.AsOfDate"},
                ],
            }
        },
        "auc": {
            "Std:JsonGet": {
                "PropertyFile": {
                    "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
                },
                "Path": "binary_classification_metrics.auc.value",
            }
        },
        "indexed": {
            "Std:JsonGet": {
                "PropertyFile": {
                    "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
                },
                "Path": "list[1].v",
            }
        },
        "plain": [1, "x", {"k": {"Get": "Parameters.AucThreshold"}}],
    }
    assert resolve(value, context) == {
        "uri": "s3://bkt/test",
        "model": "s3://bkt/model.tar.gz",
        "path": "s3://bkt/abc123/2026-03-31",
        "auc": 0.81,
        "indexed": 2,
        "plain": [1, "x", {"k": 0.7}],
    }


@pytest.mark.parametrize(
    "expression",
    [
        {"Get": "Parameters.Missing"},
        {"Get": "Steps.NotRun.ModelArtifacts.S3ModelArtifacts"},
        {"Get": "Steps.Extract.ProcessingOutputConfig.Outputs['nope'].S3Output.S3Uri"},
        {"Get": "Execution.Nope"},
        {
            "Std:JsonGet": {
                "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Other"},
                "Path": "a",
            }
        },
        {
            "Std:JsonGet": {
                "PropertyFile": {
                    "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
                },
                "Path": "binary_classification_metrics.roc",
            }
        },
    ],
)
def test_dangling_references_are_errors(context, expression):
    with pytest.raises(ExpressionError):
        resolve(expression, context)


def test_references_find_the_steps_an_argument_needs():
    value = {
        "a": [{"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}],
        "b": {
            "Std:JsonGet": {
                "PropertyFile": {
                    "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
                },
                "Path": "x",
            }
        },
        "c": {"Get": "Parameters.X"},
    }
    assert references(value) == {"Train", "Evaluate"}
