"""infra/changeset.sh against a stand-in ``aws`` CLI.

plan: which parameters each template's change set gets from
infra/parameters/<env>.json and from the run's CHANGESET_PARAMETERS, and the plan
stopping when a template's parameter has no value. The first stand-in answers as
CloudFormation would for stacks that do not exist yet: ``validate-template`` lists the
template's parameters (with ``DefaultValue`` where it has one), and
``create-change-set`` records the parameters file it was given.

apply: tests.support.fake_cloudformation keeps stacks and change sets as
CloudFormation does; apply executes exactly the change set plan created (by its id),
waits, and stops non-zero naming the cause when it cannot; a stack plan found no
changes for is a note, and a stack without the named change set is never executed.
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
ACCOUNT = "0" * 12  # the placeholder account
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
            "StagingAccountId": ACCOUNT,
            "ProdAccountId": ACCOUNT,
            "InfraRoleName": "churn-infra",
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
    # the promoting accounts reach the registry's and the artifacts' policies
    for stack in ("churn-dev-model-registry", "churn-dev-platform"):
        assert stacks[stack]["StagingAccountId"] == ACCOUNT, stack
        assert stacks[stack]["ProdAccountId"] == ACCOUNT, stack
    assert stacks["churn-dev-platform"]["InfraRoleName"] == "churn-infra"
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


def test_dev_s_registry_is_not_planned_without_the_promoting_accounts(plan):
    result, stacks = plan("model-registry")

    assert result.returncode != 0
    assert (
        "churn-dev-model-registry: infra/model-registry.yaml needs StagingAccountId, "
        "ProdAccountId" in result.stderr
    )
    assert stacks == {}


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


# --- apply ---------------------------------------------------------------------------

FAKE_CLOUDFORMATION = PROJECT_ROOT / "tests" / "support" / "fake_cloudformation.py"
# dev's stacks of templates that need no value at run time
UPDATED, UNCHANGED, CREATED = (
    "churn-dev-monitoring",
    "churn-dev-endpoint-alarms",
    "churn-dev-external-function",
)
TEMPLATES = ("monitoring", "endpoint-alarms", "external-function")


class CloudFormation:
    """The stand-in's state file, and changeset.sh run against it."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir()
        fake = self.bin_dir / "aws"
        fake.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLOUDFORMATION}" "$@"\n'
        )
        fake.chmod(0o755)
        self.home = tmp_path
        self.path = tmp_path / "cloudformation.json"
        self.state = {
            "stacks": {
                UPDATED: {"status": "UPDATE_COMPLETE", "events": []},
                UNCHANGED: {"status": "CREATE_COMPLETE", "events": []},
            },
            "plans": {UNCHANGED: []},
        }

    @property
    def state(self) -> dict:
        return json.loads(self.path.read_text())

    @state.setter
    def state(self, value: dict) -> None:
        self.path.write_text(json.dumps(value))

    def update(self, **values: dict) -> None:
        self.state = {**self.state, **values}

    def run(self, action: str, *templates: str, name: str = "infra-7-1"):
        return subprocess.run(
            ["bash", "infra/changeset.sh", action, "dev", name, *templates],
            cwd=PROJECT_ROOT,
            env={
                "PATH": f"{self.bin_dir}:/usr/bin:/bin",
                "HOME": str(self.home),
                "FAKE_AWS_STATE": str(self.path),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    def calls(self, command: str) -> list[list[str]]:
        return [c for c in self.state["calls"] if c[1] == command]

    def status(self, stack: str) -> str:
        return self.state["stacks"][stack]["status"]


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


@pytest.fixture
def cloudformation(tmp_path: Path) -> CloudFormation:
    return CloudFormation(tmp_path)


def test_apply_executes_exactly_the_change_sets_plan_created_and_waits(
    cloudformation,
):
    planned = cloudformation.run("plan", *TEMPLATES)
    assert planned.returncode == 0, planned.stderr
    change_sets = cloudformation.state["change_sets"].values()
    created = {c["StackName"]: c["ChangeSetId"] for c in change_sets}
    assert f"{UNCHANGED}: no changes" in planned.stdout

    applied = cloudformation.run("apply", *TEMPLATES)

    assert applied.returncode == 0, applied.stderr
    executed = cloudformation.calls("execute-change-set")
    assert [_option(c, "--change-set-name") for c in executed] == [
        created[UPDATED],
        created[CREATED],
    ]
    assert all(_option(c, "--client-request-token") == "infra-7-1" for c in executed)
    waits = [c[2] for c in cloudformation.calls("wait")]
    assert waits[-2:] == ["stack-update-complete", "stack-create-complete"]
    assert cloudformation.status(UPDATED) == "UPDATE_COMPLETE"
    assert cloudformation.status(CREATED) == "CREATE_COMPLETE"
    assert cloudformation.status(UNCHANGED) == "CREATE_COMPLETE"
    out = applied.stdout
    assert f"{UPDATED}: change set infra-7-1 executed: UPDATE_COMPLETE" in out
    assert f"{CREATED}: change set infra-7-1 executed: CREATE_COMPLETE" in out
    # no changes: a note, and the empty change set goes
    assert f"{UNCHANGED}: no changes (change set infra-7-1 has none)" in out
    assert cloudformation.state["change_sets"] == {}


def test_a_rerun_of_apply_executes_nothing_twice(cloudformation):
    assert cloudformation.run("plan", *TEMPLATES).returncode == 0
    assert cloudformation.run("apply", *TEMPLATES).returncode == 0

    again = cloudformation.run("apply", UPDATED.removeprefix("churn-dev-"))

    assert again.returncode == 0, again.stderr
    assert len(cloudformation.calls("execute-change-set")) == 2
    assert f"{UPDATED}: change set infra-7-1 was executed already" in again.stdout


def test_a_stack_never_planned_under_the_name_is_not_executed(cloudformation):
    assert cloudformation.run("plan", "monitoring", name="infra-6-1").returncode == 0

    applied = cloudformation.run("apply", "monitoring")  # another run's name

    assert applied.returncode == 1
    assert (
        f"{UPDATED}: no change set infra-7-1, so nothing reviewed to execute: run "
        "infra/changeset.sh plan dev infra-7-1" in applied.stderr
    )
    assert cloudformation.calls("execute-change-set") == []
    (kept,) = cloudformation.state["change_sets"].values()
    assert kept["ChangeSetName"] == "infra-6-1"  # the other one is left alone


def test_a_change_set_that_failed_to_create_stops_apply(cloudformation):
    cloudformation.update(
        plans={UPDATED: {"fail": "Parameter 'Environment' must be one of [dev]"}}
    )
    planned = cloudformation.run("plan", "monitoring")
    assert planned.returncode == 1
    assert "the change set failed: Parameter 'Environment'" in planned.stderr

    applied = cloudformation.run("apply", "monitoring", "external-function")

    assert applied.returncode == 1
    assert (
        f"{UPDATED}: change set infra-7-1 failed when plan created it: "
        "Parameter 'Environment' must be one of [dev]" in applied.stderr
    )
    assert cloudformation.calls("execute-change-set") == []


@pytest.mark.parametrize("execution", ["EXECUTE_IN_PROGRESS", "OBSOLETE"])
def test_a_change_set_that_is_not_available_is_not_executed(cloudformation, execution):
    assert cloudformation.run("plan", "monitoring").returncode == 0
    state = cloudformation.state
    (change_set,) = state["change_sets"].values()
    change_set["ExecutionStatus"] = execution
    cloudformation.state = state

    applied = cloudformation.run("apply", "monitoring")

    assert applied.returncode == 1
    assert (
        f"{UPDATED}: change set infra-7-1 is CREATE_COMPLETE/{execution}, not "
        "executable: plan again" in applied.stderr
    )
    assert cloudformation.calls("execute-change-set") == []


def test_a_failed_execution_stops_apply_naming_the_resource_and_its_reason(
    cloudformation,
):
    cloudformation.update(
        executions={UPDATED: {"fail": ["MonitoringPipeline", "Role is not authorized"]}}
    )
    assert cloudformation.run("plan", *TEMPLATES).returncode == 0

    applied = cloudformation.run("apply", *TEMPLATES)

    assert applied.returncode == 1
    assert (
        f"{UPDATED}: executing change set infra-7-1 failed, the stack is "
        "UPDATE_ROLLBACK_COMPLETE: MonitoringPipeline: Role is not authorized"
    ) in applied.stderr
    # the stacks after it wait for the next run
    executed = cloudformation.calls("execute-change-set")
    assert [_option(c, "--change-set-name").split("/")[1] for c in executed] == [
        "infra-7-1"
    ]
    assert cloudformation.status(CREATED) == "REVIEW_IN_PROGRESS"
    again = cloudformation.run("apply", "monitoring")
    assert again.returncode == 1
    assert "was executed and the stack is UPDATE_ROLLBACK_COMPLETE: plan again" in (
        again.stderr
    )


# --- the approval-events function's dispatch secret -----------------------------------

SECRET = json.loads(DEV_PARAMETERS.read_text())["Parameters"]["DispatchSecretName"]


def _check_secret(cloudformation: CloudFormation, env: str = "dev"):
    return subprocess.run(
        ["bash", "infra/check-dispatch-secret.sh", env],
        cwd=PROJECT_ROOT,
        env={
            "PATH": f"{cloudformation.bin_dir}:/usr/bin:/bin",
            "HOME": str(cloudformation.home),
            "FAKE_AWS_STATE": str(cloudformation.path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_dispatch_secret_stops_cd_naming_it_and_how_to_create_it(
    cloudformation,
):
    result = _check_secret(cloudformation)

    assert result.returncode == 1
    assert f"the secret {SECRET} does not exist here" in result.stderr
    assert (
        f'aws secretsmanager create-secret --name {SECRET} --secret-string "$TOKEN"'
        in result.stderr
    )


def test_a_dispatch_secret_without_value_stops_cd(cloudformation):
    cloudformation.update(secrets={SECRET: {"Name": SECRET}})

    result = _check_secret(cloudformation)

    assert result.returncode == 1
    assert f"the secret {SECRET} has no value: put it with" in result.stderr


def test_a_dispatch_secret_with_a_value_passes(cloudformation):
    cloudformation.update(
        secrets={SECRET: {"Name": SECRET, "VersionIdsToStages": {"v1": ["AWSCURRENT"]}}}
    )

    result = _check_secret(cloudformation)

    assert result.returncode == 0, result.stderr
    assert f"the secret {SECRET} exists and has a value" in result.stdout


def test_environments_without_the_function_need_no_secret(cloudformation):
    result = _check_secret(cloudformation, "staging")

    assert result.returncode == 0, result.stderr
    assert cloudformation.state.get("calls", []) == []
