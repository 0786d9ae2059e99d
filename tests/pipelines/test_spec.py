"""Steps as specs: a processing step is one module with a ``SPEC``, built by
``pipelines.builder`` and run by the local runner from our image.

The toy pipeline below is what a team writes to add steps: two modules of a few lines
each, in the image's ``processing`` package, and a list of their specs.
"""

import importlib.util
import json
import shutil
import textwrap
import warnings
from pathlib import Path

import pytest

from pipelines.builder import PipelineBuilder, make_session
from pipelines.definition import PROCESSING_SPECS, build_definition
from pipelines.local_runner import LocalRunner
from pipelines.sdk import load_sdk
from pipelines.spec import (
    MODEL,
    Input,
    Parameter,
    ProcessingSpec,
    PropertyFile,
    StepOutput,
    python_module,
)
from stack.config import load_config
from stack.resources import build_resources, definition_environment
from tests.conftest import PROJECT_ROOT

# Two toy steps: Double writes 2 x its parameter; Announce reads Double's output as
# a channel and its report's value as an argument.
DOUBLE = '''
"""Toy step: twice --value, in result/value.json."""
import json, sys
from pipelines.spec import Output, Parameter, ProcessingSpec, PropertyFile
from pipelines.spec import python_module
from processing.contract import ProcessingContract

SPEC = ProcessingSpec(
    name="Double",
    command=python_module("processing.toy_double"),
    arguments=("--value", Parameter("Value", text=True)),
    outputs=(Output("result", "/opt/ml/processing/result"),),
    property_files=(PropertyFile("DoubleReport", "result", "value.json"),),
)

if __name__ == "__main__":
    out = ProcessingContract.from_environment().path("/opt/ml/processing/result")
    out.mkdir(parents=True, exist_ok=True)
    (out / "value.json").write_text(json.dumps({"value": 2 * int(sys.argv[2])}))
'''
ANNOUNCE = '''
"""Toy step: what Double wrote, read both ways, in said/said.txt."""
import sys
from pipelines.spec import Input, Output, ProcessingSpec, ReportValue, StepOutput
from pipelines.spec import python_module
from processing.contract import ProcessingContract

SPEC = ProcessingSpec(
    name="Announce",
    command=python_module("processing.toy_announce"),
    arguments=("--doubled", ReportValue("Double", "DoubleReport", "value")),
    inputs=(Input("double", StepOutput("Double", "result"), "/opt/ml/processing/in"),),
    outputs=(Output("said", "/opt/ml/processing/said"),),
)

if __name__ == "__main__":
    contract = ProcessingContract.from_environment()
    read = (contract.path("/opt/ml/processing/in") / "value.json").read_text()
    out = contract.path("/opt/ml/processing/said")
    out.mkdir(parents=True, exist_ok=True)
    (out / "said.txt").write_text(f"argument {sys.argv[2]}, file {read}")
'''
# what the Dockerfile copies (and the Dockerfile itself)
IMAGE_FILES = (
    "Dockerfile",
    ".dockerignore",
    "setup.cfg",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "conf",
    "pipelines",
    "processing",
    "training",
    "inference",
    "features",
    "stack",
    "datagen",
    "snowflake",
    "monitoring",
    "dashboard",
    "docker",
)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """A build context: the project as the Dockerfile copies it, plus the toy steps."""
    root = tmp_path_factory.mktemp("context")
    for name in IMAGE_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, root / name, ignore=ignore)
        else:
            shutil.copy2(source, root / name)
    for name, code in (("toy_double", DOUBLE), ("toy_announce", ANNOUNCE)):
        (root / "processing" / f"{name}.py").write_text(textwrap.dedent(code))
    return root


@pytest.mark.e2e
def test_a_toy_step_added_as_a_module_and_a_spec_runs_locally(context, tmp_path):
    double = _module(context / "processing" / "toy_double.py").SPEC
    announce = _module(context / "processing" / "toy_announce.py").SPEC
    config = load_config("local", {"state_dir": str(tmp_path / "state")}, environ={})
    sdk = load_sdk(config.aws.region)
    with definition_environment(config), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = sdk.ParameterInteger("Value", default_value=1)
        build = PipelineBuilder(config, make_session(config), [value])
        steps = [build.processing(spec) for spec in (double, announce)]
        definition = json.loads(build.pipeline("toy", steps).definition())

    runner = LocalRunner(
        build_resources(config),
        dockerfile=context / "Dockerfile",
        context=context,
    )
    execution = runner.run(definition, {"Value": "21"}, pipeline_name="toy")

    assert execution.status == "Succeeded", execution.failed_step
    assert execution.property_files["Double"]["DoubleReport"] == {"value": 42}
    assert [s.name for s in execution.steps] == ["Double", "Announce"]
    store = runner.resources.store
    prefix = f"{config.artifact_root}/{execution.execution_id}/said"
    text = store.read_bytes(f"{prefix}/said.txt").decode()
    assert text == 'argument 42, file {"value": 42}'


def test_a_spec_cannot_read_a_step_built_after_it(tmp_path):
    config = load_config("local", {"state_dir": str(tmp_path / "state")}, environ={})
    reader = ProcessingSpec(
        name="Reader",
        command=python_module("processing.reader"),
        inputs=(Input("x", StepOutput("Writer", "out"), "/opt/ml/processing/x"),),
    )
    with definition_environment(config):
        build = PipelineBuilder(config, make_session(config))
        with pytest.raises(ValueError, match="Reader reads from Writer"):
            build.processing(reader)


def test_the_model_is_read_only_after_a_training_step(tmp_path):
    config = load_config("local", {"state_dir": str(tmp_path / "state")}, environ={})
    scorer = ProcessingSpec(
        name="Scorer",
        command=python_module("processing.scorer"),
        inputs=(Input("model", MODEL, "/opt/ml/processing/model"),),
    )
    with definition_environment(config):
        build = PipelineBuilder(config, make_session(config))
        with pytest.raises(ValueError, match="before a training step"):
            build.processing(scorer)


def test_two_steps_cannot_share_a_name(tmp_path):
    config = load_config("local", {"state_dir": str(tmp_path / "state")}, environ={})
    spec = ProcessingSpec(name="Twice", command=python_module("processing.twice"))
    with definition_environment(config):
        build = PipelineBuilder(config, make_session(config))
        build.processing(spec)
        with pytest.raises(ValueError, match="two steps are named Twice"):
            build.processing(spec)


def test_a_property_file_must_be_in_a_declared_output():
    with pytest.raises(ValueError, match="not declare"):
        ProcessingSpec(
            name="Bad",
            command=python_module("processing.bad"),
            property_files=(PropertyFile("BadReport", "nowhere", "x.json"),),
        )


def test_each_processing_step_of_the_definition_is_its_spec():
    """What a spec declares is what the definition's request carries."""
    config = load_config("local", environ={})
    definition = build_definition(config)
    requests = {}

    def walk(steps):
        for step in steps:
            requests[step["Name"]] = step
            arguments = step.get("Arguments", {})
            if step["Type"] == "Condition":
                walk(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))

    walk(definition["Steps"])
    assert set(PROCESSING_SPECS) <= set(requests)
    for name, spec in PROCESSING_SPECS.items():
        request = requests[name]
        assert request["Type"] == "Processing"
        arguments = request["Arguments"]
        app = arguments["AppSpecification"]
        assert app["ContainerEntrypoint"] == list(spec.command)
        assert [i["InputName"] for i in arguments.get("ProcessingInputs", [])] == [
            i.name for i in spec.inputs
        ]
        outputs = arguments.get("ProcessingOutputConfig", {}).get("Outputs", [])
        assert [o["OutputName"] for o in outputs] == [o.name for o in spec.outputs]
        assert [f["PropertyFileName"] for f in request.get("PropertyFiles", [])] == [
            f.name for f in spec.property_files
        ]
        assert ("CacheConfig" in request) == (
            spec.cached and bool(config.sagemaker.cache_expire_after)
        )
        if isinstance(spec.instance_count, Parameter):
            count = arguments["ProcessingResources"]["ClusterConfig"]["InstanceCount"]
            assert count == {"Get": f"Parameters.{spec.instance_count.name}"}
