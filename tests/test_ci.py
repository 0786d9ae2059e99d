"""CI and CD as files: the linters pass on them, every command they run exists in the
project, and the CloudFormation parameters match the configuration.

The linters come from the project's own set-up (scripts/setup.sh --dev installs them
into .venv from PyPI wheels): actionlint (with shellcheck for ``run:`` steps),
cfn-lint and hadolint.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from stack.config import load_config
from tests.conftest import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent
WORKFLOWS = sorted((PROJECT_ROOT / ".github").rglob("*.yml"))
HARNESS = sorted((PROJECT_ROOT / ".harness").glob("*.yaml"))  # the pipelines
HARNESS_ENVIRONMENTS = sorted(
    (PROJECT_ROOT / ".harness" / "environments").glob("*.yaml")
)
ENVIRONMENTS = ["dev", "staging", "prod"]
# Harness's published pipeline schema (harness/harness-schema v0/pipeline.json): CI
# fetches it pinned (ci.yml, infra job); not vendored (3.4 MB, no licence file).
HARNESS_SCHEMA = os.environ.get("HARNESS_PIPELINE_SCHEMA", "")
TEMPLATES = sorted((PROJECT_ROOT / "infra").glob("*.yaml"))
PROJECT_PACKAGES = {
    "pipelines", "processing", "training", "inference", "features", "stack",
    "datagen", "snowflake", "benchmarks",
}  # fmt: skip
# Shell builtins and the runner's own tools that the scripts use.
SYSTEM_COMMANDS = {
    "cd", "echo", "exit", "printf", "read", "set", "test", "mkdir", "find", "sort",
    "tee", "jq", "docker", "curl", "rm", "export", "aws", "tar", "sha256sum", "[",
    "git", "[[",
}  # fmt: skip
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "!", "while"}
OPERATORS = {";", "&&", "||", "|", "&", ";;"}
EXPRESSION = re.compile(r"\$\{\{.*?\}\}|<\+[^>]*>")  # GitHub and Harness expressions
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _tool(name):
    path = VENV_BIN / name
    assert path.exists(), f"{name} is missing: run scripts/setup.sh --dev"
    return str(path)


def _lint(argv):
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(PROJECT_ROOT)}
    return subprocess.run(
        argv, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=120
    )


# --- the linters ---------------------------------------------------------------------


def test_actionlint_is_clean_on_the_workflows():
    assert WORKFLOWS
    result = _lint([_tool("actionlint"), "-no-color"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_is_clean_on_the_templates():
    assert len(TEMPLATES) >= 3
    result = _lint([_tool("cfn-lint"), *map(str, TEMPLATES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_clean_on_the_dockerfile():
    result = _lint([_tool("hadolint"), "--no-color", "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_is_clean_on_the_scripts_cd_runs():
    """infra/*.sh, and every Harness script with its expressions as words
    (actionlint already runs shellcheck on the workflows' run steps).
    """
    scripts = sorted((PROJECT_ROOT / "infra").glob("*.sh"))
    assert PROJECT_ROOT / "infra" / "changeset.sh" in scripts
    result = _lint([_tool("shellcheck"), *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr
    problems = []
    for path in HARNESS:
        for where, script in _harness_scripts(yaml.safe_load(path.read_text()), path):
            text = "#!/usr/bin/env bash\n" + EXPRESSION.sub(
                "harness_expression", script
            )
            checked = subprocess.run(
                [_tool("shellcheck"), "-"], input=text, capture_output=True, text=True
            )
            if checked.returncode:
                problems.append(f"{where.name}:\n{checked.stdout}")
    assert problems == []


def test_the_linters_do_report_problems(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    workflow = tmp_path / ".github" / "workflows" / "bad.yml"
    workflow.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n")
    template = tmp_path / "bad.yaml"
    template.write_text(
        "Resources:\n  B:\n    Type: AWS::S3::Bucket\n    Properties:\n"
        "      NoSuchProperty: 1\n"
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN cd /tmp\n")
    assert _lint([_tool("actionlint"), str(workflow)]).returncode != 0
    assert _lint([_tool("cfn-lint"), str(template)]).returncode != 0
    assert _lint([_tool("hadolint"), str(dockerfile)]).returncode != 0


# --- every command the workflows and the Harness pipeline run exists ---------------


def _scripts():
    """(where, script) for every run step and Harness shell script."""
    for path in WORKFLOWS:
        document = yaml.safe_load(path.read_text())
        jobs = (document.get("jobs") or {}).values()
        steps = [s for job in jobs for s in job.get("steps", [])]
        steps += (document.get("runs") or {}).get("steps", [])
        for step in steps:
            if "run" in step:
                yield f"{path.name}: {step.get('name', '')}", step["run"]
    for path in HARNESS:
        yield from _harness_scripts(yaml.safe_load(path.read_text()), path.name)


def _harness_scripts(node, where):
    """(where, script) for each ShellScript of a Harness document."""
    if isinstance(node, dict):
        if isinstance(node.get("script"), str):
            yield where, node["script"]
        for value in node.values():
            yield from _harness_scripts(value, where)
    elif isinstance(node, list):
        for value in node:
            yield from _harness_scripts(value, where)


def commands(script):
    """The simple commands of a shell script, as argv lists (expressions -> X)."""
    script = EXPRESSION.sub("X", script).replace("\\\n", " ")
    while SUBSTITUTION.search(script):
        script = SUBSTITUTION.sub(lambda m: "X; " + m.group(1) + " ;", script)
    lexer = shlex.shlex(
        _unquoted_newlines_end_commands(script), posix=True, punctuation_chars=";&|"
    )
    lexer.whitespace_split = True
    lexer.commenters = ""
    found, segment = [], []
    for token in [*lexer, ";"]:
        if token in OPERATORS:
            while segment and (
                segment[0] in SHELL_KEYWORDS or ASSIGNMENT.match(segment[0])
            ):
                segment.pop(0)
            if segment:
                found.append(segment)
            segment = []
        else:
            segment.append(token)
    return found


def _unquoted_newlines_end_commands(script):
    """Newlines outside quotes become ``;`` and comments go, so a quoted argument
    may span lines (a jq program) while every line is still its own command.
    """
    out, quote, i = [], None, 0
    while i < len(script):
        char = script[i]
        if quote:
            if char == "\\" and quote == '"':
                out.append(script[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (not out or out[-1][-1:] in " \t\n;"):
            while i < len(script) and script[i] != "\n":
                i += 1
            continue
        elif char == "\n":
            char = " ; "
        out.append(char)
        i += 1
    return "".join(out)


@cache
def _help(argv):
    result = subprocess.run(
        [sys.executable, "-m", *argv, "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"python -m {' '.join(argv)} --help failed"
    return result.stdout


def _module_problem(module, args):
    spec = importlib.util.find_spec(module)
    if spec is None:
        return f"no module {module}"
    is_package = spec.submodule_search_locations is not None
    if is_package and importlib.util.find_spec(f"{module}.__main__") is None:
        return f"{module} is a package without __main__"  # python -m would refuse it
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    text = _help((module,))
    # subcommands are the first positional argument's choices (not an option's)
    choices = re.search(r"positional arguments:\s*\n\s*\{([\w,-]+)\}", text)
    positional = [a for a in args if not a.startswith("-")]
    if choices and positional:
        if positional[0] not in choices.group(1).split(","):
            return f"{module} has no command {positional[0]!r}"
        text = _help((module, positional[0]))
    unknown = [
        a.split("=")[0]
        for a in args
        if a.startswith("--")
        and not re.search(rf"{re.escape(a.split('=')[0])}\b", text)
    ]
    return f"{module} has no option {', '.join(unknown)}" if unknown else None


def command_problem(argv):
    """Why ``argv`` would not run in this project, or None."""
    program, args = argv[0], argv[1:]
    name = Path(program).name
    if name in {"python", "python3"}:
        if args[:1] == ["-m"] and len(args) > 1:
            return _module_problem(args[1], args[2:])
        if args[:1] == ["-c"]:
            return None
        script = args[0] if args else ""
        return None if (PROJECT_ROOT / script).is_file() else f"no script {script}"
    if name in {"bash", "sh"}:
        if not (PROJECT_ROOT / args[0]).is_file():
            return f"no script {args[0]}"
        if args[0] == "infra/changeset.sh" and args[1:2] not in (["plan"], ["apply"]):
            return f"infra/changeset.sh has no action {args[1:2]}"
        return None
    if program.startswith(".venv/bin/"):
        return None if (VENV_BIN / name).exists() else f"{name} is not in .venv/bin"
    if "/" in program:
        return None if (PROJECT_ROOT / program).is_file() else f"no file {program}"
    if name in SYSTEM_COMMANDS or name in _console_scripts():
        return None
    return f"unknown command {name}"


@cache
def _console_scripts():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(PROJECT_ROOT / "setup.cfg")
    lines = setup.get("options.entry_points", "console_scripts", fallback="")
    return {line.split("=")[0].strip() for line in lines.splitlines() if "=" in line}


def test_every_command_the_workflows_and_harness_run_exists():
    seen, problems = 0, []
    for where, script in _scripts():
        for argv in commands(script):
            seen += 1
            problem = command_problem(argv)
            if problem:
                problems.append(f"{where}: {' '.join(argv)}: {problem}")
    assert seen > 30  # the parser found the scripts
    assert problems == []


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("python -m features deploy", "without __main__"),
        (
            "python -m snowflake.sagemaker_predictions deploy --no-such-flag",
            "no option --no-such-flag",
        ),
        (
            "python -m pipelines.run --env dev --no-such-flag",
            "no option --no-such-flag",
        ),
        ("x=$(python -m benchmarks.compare nope)", "no command 'nope'"),
        ("cd /tmp && scripts/not-there.sh", "no file scripts/not-there.sh"),
        ("if mystery-tool; then echo; fi", "unknown command mystery-tool"),
        ('"$HOME/v/bin/python" -m no_such_module_x', "no module no_such_module_x"),
        ("bash infra/changeset.sh deploy dev x", "no action ['deploy']"),
    ],
)
def test_the_command_check_finds_what_would_not_run(script, problem):
    found = [command_problem(argv) for argv in commands(script)]
    assert any(p and problem in p for p in found), found


# --- Harness: the published schema, environments, pinning, clean-up, rollback -------


def _harness(name):
    return yaml.safe_load((PROJECT_ROOT / ".harness" / name).read_text())


def _stages(pipeline):
    return [s["stage"] for s in pipeline["pipeline"]["stages"]]


def _steps(stage, key="steps"):
    return [s["step"] for s in stage["spec"]["execution"].get(key, [])]


def _script(step):
    return step["spec"]["source"]["spec"]["script"]


@cache
def _harness_schema():
    if not HARNESS_SCHEMA or not Path(HARNESS_SCHEMA).is_file():
        pytest.skip(
            "Harness's pipeline schema is not here: set HARNESS_PIPELINE_SCHEMA to "
            "harness/harness-schema's v0/pipeline.json (CI's infra job fetches it)"
        )
    return json.loads(Path(HARNESS_SCHEMA).read_text())


def _schema_errors(document):
    import jsonschema

    schema = _harness_schema()
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    # a Custom stage's environment is not in the published CustomStageConfig (which
    # allows it, as Harness does): check it against the deployment stage's definition
    environment = {
        **schema["definitions"]["pipeline"]["stages"]["cd"]["EnvironmentYamlV2"],
        "definitions": schema["definitions"],
        "required": ["environmentRef"],
    }
    for stage in _stages(document):
        if "environment" in stage["spec"]:
            errors += jsonschema.Draft7Validator(environment).iter_errors(
                stage["spec"]["environment"]
            )
    return [
        f"{list(e.absolute_path)}: {jsonschema.exceptions.best_match([e]).message}"[
            :300
        ]
        for e in errors
    ]


@pytest.mark.parametrize("name", [p.name for p in HARNESS])
def test_the_harness_pipelines_validate_against_harness_s_published_schema(name):
    assert _schema_errors(_harness(name)) == []


def test_the_harness_schema_check_finds_what_harness_would_refuse():
    import copy

    pipeline = _harness("pipeline.yaml")
    bad_name = copy.deepcopy(pipeline)
    _steps(_stages(bad_name)[0])[0]["name"] = "Install (the release)"
    bad_shell = copy.deepcopy(pipeline)
    _steps(_stages(bad_shell)[0])[0]["spec"]["shell"] = "Zsh"
    no_environment_ref = copy.deepcopy(pipeline)
    del _stages(no_environment_ref)[0]["spec"]["environment"]["environmentRef"]
    for broken in (bad_name, bad_shell, no_environment_ref):
        assert _schema_errors(broken) != []


def test_each_deploy_stage_is_bound_to_a_harness_environment_not_to_inputs():
    """A run asks for the release (and optional package, train, rollback release);
    everything per account comes from the environment's variables.
    """
    environments = {
        p.stem: yaml.safe_load(p.read_text())["environment"]
        for p in HARNESS_ENVIRONMENTS
    }
    assert sorted(environments) == sorted(ENVIRONMENTS)
    assert environments["prod"]["type"] == "Production"
    for path in HARNESS:
        text = path.read_text()
        pipeline = yaml.safe_load(text)["pipeline"]
        inputs = [v["name"] for v in pipeline["variables"] if "<+input>" in v["value"]]
        assert len(inputs) <= 4, inputs
        referenced = set(re.findall(r"<\+env\.variables\.(\w+)>", text))
        assert referenced
        for stage in _stages({"pipeline": pipeline}):
            assert "<+input>" not in yaml.safe_dump(stage), stage["identifier"]
            if stage["type"] != "Custom":
                continue
            environment = environments[stage["spec"]["environment"]["environmentRef"]]
            declared = {v["name"] for v in environment["variables"]}
            assert referenced <= declared, referenced - declared
    for environment in environments.values():
        for variable in environment["variables"]:
            # account-specific values are references to Harness secrets, never values
            if variable["name"].endswith(("_arn", "_account", "_user", "registry")):
                assert variable["type"] == "Secret", variable["name"]


def test_every_harness_stage_assumes_the_environment_s_role_and_cleans_its_workspace():
    for path in HARNESS:
        for stage in _stages(yaml.safe_load(path.read_text())):
            if stage["type"] != "Custom":
                continue
            steps = _steps(stage)
            first, last = _script(steps[0]), steps[-1]
            assert "role_arn = %s" in first and "credential_source = %s" in first
            for step in steps[1:]:
                if step["type"] == "ShellScript" and "aws-config" in _script(step):
                    assert 'AWS_CONFIG_FILE="$workspace/aws-config"' in _script(step)
            assert last["when"] == {"stageStatus": "All"}
            assert 'rm -rf "$HOME/harness-mlops/' in _script(last)
            for step in steps:
                if step["type"] == "ShellScript":
                    assert step["spec"]["delegateSelectors"] == [
                        "<+env.variables.delegate_selector>"
                    ]


def test_harness_installs_the_release_pinned_and_rolls_back_on_failure():
    for stage in _stages(_harness("pipeline.yaml")):
        if stage["type"] != "Custom":
            continue
        install = _script(_steps(stage)[0])
        assert "/constraints.txt" in install
        assert '-c "$workspace/constraints.txt"' in install
        assert '"snowflake-sagemaker-mlops==<+pipeline.variables.version>"' in install
        assert stage["failureStrategies"] == [
            {
                "onFailure": {
                    "errors": ["AllErrors"],
                    "action": {"type": "StageRollback"},
                }
            }
        ]
        rollback = [_script(s) for s in _steps(stage, "rollbackSteps")]
        assert any("-m pipelines.rollback --env" in s for s in rollback)
        assert _steps(stage, "rollbackSteps")[-1]["when"] == {"stageStatus": "All"}
    stages = [s["identifier"] for s in _stages(_harness("pipeline.yaml"))]
    assert stages == ["dev", "staging", "prod_approval", "prod"]


def test_infra_change_sets_are_reviewed_before_prod_executes_them():
    for stage in _stages(_harness("infra.yaml")):
        kinds = [(s["identifier"], s["type"]) for s in _steps(stage)]
        names = [k[0] for k in kinds]
        assert names.index("plan") < names.index("apply")
        approvals = [
            i for i, (_, kind) in enumerate(kinds) if kind == "HarnessApproval"
        ]
        if stage["identifier"] == "prod":
            assert approvals and names.index("plan") < approvals[0] < names.index(
                "apply"
            )
        else:
            assert approvals == []
    workflow = yaml.safe_load(
        (PROJECT_ROOT / ".github/workflows/infra.yml").read_text()
    )
    jobs = workflow["jobs"]
    for env, previous in zip(ENVIRONMENTS, [None, *ENVIRONMENTS], strict=False):
        assert jobs[f"plan-{env}"]["environment"] == f"{env}-plan"  # no reviewers
        assert jobs[f"apply-{env}"]["environment"] == env  # prod: required reviewers
        assert jobs[f"apply-{env}"]["needs"] == f"plan-{env}"
        # the name its plan created, also when a failed apply job is re-run
        assert jobs[f"plan-{env}"]["outputs"]["change_set"] == "${{ env.CHANGE_SET }}"
        assert jobs[f"apply-{env}"]["env"]["CHANGE_SET"] == (
            f"${{{{ needs.plan-{env}.outputs.change_set }}}}"
        )
        if previous:
            assert jobs[f"plan-{env}"]["needs"] == f"apply-{previous}"


# --- CloudFormation parameters per environment -------------------------------------


class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _github_run_time_parameters(env):
    """The keys of CHANGESET_PARAMETERS that infra.yml's plan job of ``env`` passes."""
    job = yaml.safe_load((PROJECT_ROOT / ".github/workflows/infra.yml").read_text())[
        "jobs"
    ][f"plan-{env}"]
    (plan,) = [s for s in job["steps"] if "changeset.sh plan" in s.get("run", "")]
    given = plan.get("env", {}).get("CHANGESET_PARAMETERS")
    return set(json.loads(EXPRESSION.sub('"X"', given))) if given else set()


def _harness_run_time_parameters(env):
    """The keys of the object the Harness infra stage ``env`` builds with jq as
    CHANGESET_PARAMETERS before its plan.
    """
    (stage,) = [s for s in _stages(_harness("infra.yaml")) if s["identifier"] == env]
    (plan,) = [s for s in _steps(stage) if s["identifier"] == "plan"]
    built = re.search(r"CHANGESET_PARAMETERS=\$\(jq -n .*?'\{(.*?)\}'\)", _script(plan))
    return set(re.findall(r"(\w+):", built.group(1))) if built else set()


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_parameters_of_each_environment_match_its_configuration(env):
    parameters = json.loads((PROJECT_ROOT / f"infra/parameters/{env}.json").read_text())
    values = parameters["Parameters"]
    # what only the run knows (approval-deploy's archive key) must come from both CDs
    run_time = _github_run_time_parameters(env) & _harness_run_time_parameters(env)
    declared = {}
    deployed = parameters.get("Templates", [t.stem for t in TEMPLATES])
    assert deployed[0] == "platform"  # the others import its exports
    for template in TEMPLATES:
        if template.stem in deployed:
            declared[template.name] = yaml.load(template.read_text(), _CfnLoader)[
                "Parameters"
            ]
    for name, params in declared.items():
        required = {key for key, spec in params.items() if "Default" not in spec}
        given = values.keys() | run_time
        assert required <= given, f"{name} needs {required - given}"
    all_declared = set().union(*declared.values())
    assert values.keys() <= all_declared
    config = load_config(env)
    assert values["Environment"] == env
    assert values["Prefix"] == config.aws.prefix
    assert values["BucketName"] == config.aws.bucket
    assert values["EndpointName"] == config.sagemaker.endpoint_name
    assert values["ModelPackageGroupName"] == config.sagemaker.model_package_group


def test_approval_deploy_gets_the_archive_of_the_code_it_deploys_in_dev_only():
    """One command builds the function's archive (infra.yml from the commit,
    release.yml into the Harness bundle); each CD uploads it under its digest and
    passes that key, and only dev deploys the template.
    """
    build = "-m pipelines.approval_events package --output"
    infra = (PROJECT_ROOT / ".github/workflows/infra.yml").read_text()
    plan_dev = yaml.safe_load(infra)["jobs"]["plan-dev"]["steps"]
    runs = "\n".join(step.get("run", "") for step in plan_dev)
    assert build in runs
    assert 'key="${prefix}/lambda/approval-events-${SHA256}.zip"' in runs
    release = (PROJECT_ROOT / ".github/workflows/release.yml").read_text()
    assert f"{build} build/lambda" in release
    assert "-czf infra.tar.gz infra -C build lambda" in release
    (dev,) = [s for s in _stages(_harness("infra.yaml")) if s["identifier"] == "dev"]
    (plan,) = [s for s in _steps(dev) if s["identifier"] == "plan"]
    assert 'key="$prefix/lambda/approval-events-$sha256.zip"' in _script(plan)
    assert "aws s3 cp --only-show-errors lambda/approval-events.zip" in _script(plan)
    # the secret no template creates is checked before the plan, by both CDs
    check = "bash infra/check-dispatch-secret.sh"
    assert runs.index(f"{check} dev") < runs.index("changeset.sh plan")
    assert _script(plan).index(check) < _script(plan).index("changeset.sh plan")
    for env in ENVIRONMENTS:
        parameters = json.loads(
            (PROJECT_ROOT / f"infra/parameters/{env}.json").read_text()
        )
        deployed = "approval-deploy" in parameters["Templates"]
        assert deployed == (env == "dev"), env
        for run_time in (_github_run_time_parameters, _harness_run_time_parameters):
            assert ("FunctionCodeKey" in run_time(env)) == deployed, (env, run_time)


def test_dev_shares_its_registry_and_artifacts_with_the_promoting_accounts_only():
    """AWS's cross-account registry pattern, in templates: dev's group policy
    (model-registry.yaml, dev only) and platform's bucket and key policies name the
    staging and prod accounts, which only dev's CD runs pass (no account id is in the
    repository); platform gives dev's infra role its rights on the Lambda archives.
    """
    shared = {"StagingAccountId", "ProdAccountId", "InfraRoleName"}
    for env in ENVIRONMENTS:
        parameters = json.loads(
            (PROJECT_ROOT / f"infra/parameters/{env}.json").read_text()
        )
        deployed = parameters["Templates"]
        assert ("model-registry" in deployed) == (env == "dev"), env
        assert deployed.index("platform") == 0
        assert not shared & parameters["Parameters"].keys(), env
        for run_time in (_github_run_time_parameters, _harness_run_time_parameters):
            given = shared & run_time(env)
            assert given == (shared if env == "dev" else set()), (env, run_time)
    registry = (PROJECT_ROOT / "infra/model-registry.yaml").read_text()
    platform = (PROJECT_ROOT / "infra/platform.yaml").read_text()
    for sid in ("PromotionReadsTheGroup", "PromotionReadsItsVersions"):
        assert f"Sid: {sid}" in registry
    for sid in ("PromotionDecryptsThroughS3", "PromotionReadsArtifacts"):
        assert f"Sid: {sid}" in platform
    assert '"${ArtifactsBucket.Arn}/${Prefix}/lambda/*"' in platform


# --- the job summary -----------------------------------------------------------------


def test_the_job_summary_reads_what_the_jobs_uploaded(tmp_path):
    import json

    from scripts.ci_summary import summary

    tests_dir = tmp_path / "test-reports-3.11"
    tests_dir.mkdir()
    (tests_dir / "junit.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2"/>'
        "</testsuites>"
    )
    (tests_dir / "coverage.xml").write_text('<coverage line-rate="0.8312"/>')
    security = tmp_path / "security-reports"
    security.mkdir()
    (security / "pip-audit.json").write_text(
        json.dumps(
            {
                "dependencies": [
                    {"name": "a", "version": "1", "vulns": []},
                    {"name": "b", "version": "2", "vulns": [{"id": "X"}]},
                ]
            }
        )
    )
    text = summary(tmp_path, json.dumps({"tests": {"result": "failure"}}))
    assert "| tests | failure |" in text
    assert (
        "- Python 3.11: 7 passed, 1 failed, 2 skipped; coverage 83.1% of lines" in text
    )
    assert "2 locked packages, 1 with known vulnerabilities\n  - b 2" in text
    assert "- no distributions" in text
