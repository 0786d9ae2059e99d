"""infra/changeset.sh plan against a stand-in ``aws`` CLI: which parameters each
template's change set gets from infra/parameters/<env>.json and from the run's
CHANGESET_PARAMETERS, and the plan stopping when a template's parameter has no value.

The stand-in answers as CloudFormation would for stacks that do not exist yet:
``validate-template`` lists the template's parameters (with ``DefaultValue`` where it
has one), and ``create-change-set`` records the parameters file it was given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

DEV_PARAMETERS = PROJECT_ROOT / "infra" / "parameters" / "dev.json"
KEY = "churn/lambda/approval-events-" + "0" * 64 + ".zip"
FAKE_AWS = f"""#!{sys.executable}
import json, os, sys, yaml

class Loader(yaml.SafeLoader):
    pass

Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
args = sys.argv[1:]

def option(name):
    return args[args.index(name) + 1]

if args[:2] == ["cloudformation", "describe-stacks"]:
    sys.exit(255)  # no such stack
if args[:2] == ["cloudformation", "validate-template"]:
    path = option("--template-body").removeprefix("file://")
    with open(path) as handle:
        declared = yaml.load(handle, Loader).get("Parameters")
    answer = None if declared is None else [
        {{"ParameterKey": key, "NoEcho": False,
          **({{"DefaultValue": str(spec["Default"])}} if "Default" in spec else {{}})}}
        for key, spec in declared.items()
    ]
    print(json.dumps(answer))
elif args[:2] == ["cloudformation", "create-change-set"]:
    with open(option("--parameters").removeprefix("file://")) as handle:
        parameters = json.load(handle)
    with open(os.environ["FAKE_AWS_LOG"], "a") as log:
        log.write(json.dumps({{"stack": option("--stack-name"),
                              "parameters": parameters}}) + "\\n")
"""


@pytest.fixture
def plan(tmp_path: Path):
    """Run ``infra/changeset.sh plan dev`` with the stand-in; returns the process and
    each stack's parameters as a dict.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aws"
    fake.write_text(FAKE_AWS)
    fake.chmod(0o755)
    log = tmp_path / "aws.jsonl"

    def run(*templates: str, run_time: str | None = None):
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FAKE_AWS_LOG": str(log),
        }
        if run_time is not None:
            env["CHANGESET_PARAMETERS"] = run_time
        log.write_text("")
        result = subprocess.run(
            ["bash", "infra/changeset.sh", "plan", "dev", "test-1", *templates],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        stacks = {}
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            stacks[entry["stack"]] = {
                p["ParameterKey"]: p["ParameterValue"] for p in entry["parameters"]
            }
        return result, stacks

    return run


def _dev_parameters() -> dict[str, str]:
    return json.loads(DEV_PARAMETERS.read_text())["Parameters"]


def test_run_time_values_reach_only_the_templates_that_declare_them(plan):
    run_time = json.dumps(
        {
            "FunctionCodeKey": KEY,
            "GitHubRepository": "acme/churn",
            "DispatchTarget": "github",
            "NoTemplateDeclaresThis": "x",
        }
    )

    result, stacks = plan(run_time=run_time)

    assert result.returncode == 0, result.stderr
    templates = json.loads(DEV_PARAMETERS.read_text())["Templates"]
    assert list(stacks) == [f"churn-dev-{t}" for t in templates]
    approval = stacks["churn-dev-approval-deploy"]
    file_values = _dev_parameters()
    assert approval["FunctionCodeKey"] == KEY
    assert approval["GitHubRepository"] == "acme/churn"  # the run's over the file's
    assert approval["DispatchSecretName"] == file_values["DispatchSecretName"]
    assert approval["BucketName"] == file_values["BucketName"]
    assert "EndpointName" not in approval  # not declared by this template
    for stack, parameters in stacks.items():
        assert "NoTemplateDeclaresThis" not in parameters, stack
        if stack != "churn-dev-approval-deploy":
            assert "FunctionCodeKey" not in parameters, stack


def test_a_parameter_without_value_or_default_stops_the_plan(plan):
    result, stacks = plan("approval-deploy")

    assert result.returncode != 0
    assert (
        "churn-dev-approval-deploy: infra/approval-deploy.yaml needs FunctionCodeKey"
        in result.stderr
    )
    assert stacks == {}  # no change set was created


def test_the_file_alone_plans_templates_that_need_nothing_at_run_time(plan):
    result, stacks = plan("platform", "monitoring")

    assert result.returncode == 0, result.stderr
    assert stacks["churn-dev-platform"]["BucketName"] == _dev_parameters()["BucketName"]


@pytest.mark.parametrize("run_time", ["[1]", "not json", '"FunctionCodeKey"'])
def test_run_time_values_must_be_a_json_object(plan, run_time):
    result, stacks = plan(run_time=run_time)

    assert result.returncode == 2
    assert "CHANGESET_PARAMETERS is not a JSON object" in result.stderr
    assert stacks == {}
