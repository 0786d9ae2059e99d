"""infra/monitoring.yaml agrees with the code and the configuration: the schedules start
the monitoring pipeline by its name with its parameter, Model Monitor runs our check,
and each environment's parameters match conf/ENV.yaml. (cfn-lint runs on every
template in tests/test_ci.py.)
"""

import json

import pytest
import yaml

from monitoring import check
from monitoring.pipeline import FORCE_RETRAIN
from pipelines.parameters import check_parameters
from stack.config import load_config
from tests.conftest import PROJECT_ROOT


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation's short tags as their long form (!Sub x -> {Fn::Sub: x})."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def template(name):
    return yaml.load((PROJECT_ROOT / "infra" / name).read_text(), _Loader)


def test_both_rules_start_the_monitoring_pipeline_with_force_retrain():
    resources = template("monitoring.yaml")["Resources"]
    forced = {}
    for name in ("DriftCheckRule", "RetrainCheckRule"):
        (target,) = resources[name]["Properties"]["Targets"]
        assert target["Arn"]["Fn::Sub"].endswith(":pipeline/${PipelineName}-monitor")
        assert target["RoleArn"] == {"Fn::GetAtt": "SchedulerRole.Arn"}
        (parameter,) = target["SageMakerPipelineParameters"]["PipelineParameterList"]
        assert parameter["Name"] == FORCE_RETRAIN
        check_parameters({parameter["Name"]: parameter["Value"]})  # in its domain
        forced[name] = parameter["Value"]
    assert forced == {"DriftCheckRule": "false", "RetrainCheckRule": "true"}
    schedule = resources["DriftCheckRule"]["Properties"]["ScheduleExpression"]
    assert schedule == {"Ref": "MonitorSchedule"}
    (statement,) = resources["SchedulerRole"]["Properties"]["Policies"][0][
        "PolicyDocument"
    ]["Statement"]
    assert statement["Action"] == "sagemaker:StartPipelineExecution"
    assert statement["Resource"]["Fn::Sub"].endswith("pipeline/${PipelineName}-monitor")


def test_model_monitor_runs_our_check_on_the_endpoint_s_capture():
    resources = template("monitoring.yaml")["Resources"]
    job = resources["DataQualityJobDefinition"]["Properties"]
    app = job["DataQualityAppSpecification"]
    assert app["ContainerEntrypoint"] == list(check.SPEC.command)
    assert job["DataQualityJobInput"]["EndpointInput"]["EndpointName"] == {
        "Ref": "EndpointName"
    }
    baseline = job["DataQualityBaselineConfig"]
    assert baseline["StatisticsResource"]["S3Uri"] == {"Ref": "BaselineStatisticsUri"}
    assert baseline["ConstraintsResource"]["S3Uri"] == {"Ref": "BaselineConstraintsUri"}
    schedule = resources["DataQualitySchedule"]["Properties"]
    assert schedule["MonitoringScheduleConfig"]["MonitoringType"] == "DataQuality"
    assert resources["DataQualitySchedule"]["Condition"] == "ModelMonitorOn"


def test_the_pipeline_role_may_start_the_training_pipeline():
    role = template("platform.yaml")["Resources"]["PipelineRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    (retrain,) = [
        s for s in statements if s["Sid"] == "RetrainStartsTheTrainingPipeline"
    ]
    assert retrain["Action"] == "sagemaker:StartPipelineExecution"
    assert retrain["Resource"]["Fn::Sub"].endswith(":pipeline/${PipelineName}")


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_each_environment_s_parameters_match_its_configuration(env):
    values = json.loads(
        (PROJECT_ROOT / "infra" / "parameters" / f"{env}.json").read_text()
    )["Parameters"]
    config = load_config(env, environ={})
    assert values["PipelineName"] == config.sagemaker.pipeline_name
    assert values["MonitorSchedule"] == config.monitoring.schedule
    assert values["EnableModelMonitor"] in ("true", "false")
