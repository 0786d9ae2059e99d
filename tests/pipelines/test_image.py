"""Jobs run as SageMaker runs our image: its code (staged from the Dockerfile, never the
checkout), its ENV, the request's Environment and SageMaker's variables, nothing from
the caller's shell, and its USER against root-owned /opt/ml mounts.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipelines.image import ImageError, read_dockerfile, stage_image
from pipelines.local_jobs import Container, Platform, bwrap_works
from pipelines.local_runner import LocalRunner, platform_variables
from stack.resources import build_resources
from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ISOLATED = pytest.mark.skipif(
    not bwrap_works(), reason="needs bubblewrap (.ci/run installs it)"
)
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return stage_image(tmp_path_factory.mktemp("images"), DOCKERFILE)


def variant(tmp_path, edit) -> Path:
    """A copy of our Dockerfile changed by ``edit`` (the build context stays ours)."""
    path = tmp_path / "Dockerfile"
    path.write_text(edit(DOCKERFILE.read_text()))
    return path


def processing(name, code, environment=None):
    """A Processing step running ``python -c code`` with an output folder."""
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                    "VolumeSizeInGB": 30,
                }
            },
            "AppSpecification": {
                "ImageUri": "local/img",
                "ContainerEntrypoint": ["python", "-c", code],
            },
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "Environment": environment or {},
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "out",
                        "S3Output": {
                            "S3Uri": "s3://mlops-local/t/out",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        },
    }


def one_step(step):
    return {"Version": "2020-12-01", "Parameters": [], "Steps": [step]}


# --- what the image holds ---------------------------------------------------------------


def run_in(image, tmp_path, code, isolation="auto"):
    container = Container(image, Platform(isolation=isolation))
    instance = container.instance(tmp_path / "job", "algo-1")
    argv, env = container.command(["python", "-c", code], instance, {}, {})
    return subprocess.run(
        argv, env=env, cwd=instance.workdir, capture_output=True, text=True, timeout=120
    )


def test_the_staged_image_holds_what_the_dockerfile_copies_and_nothing_else(
    image, tmp_path
):
    code = (
        "import importlib.util as u, json, processing, xgboost, snowflake.connector\n"
        "print(json.dumps({'processing': processing.__file__, 'missing': [m for m in "
        "('pytest', 'moto', 'hypothesis', 'benchmarks') "
        "if u.find_spec(m) is None]}))"
    )
    result = run_in(image, tmp_path, code)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    # our code from the image's venv, not the checkout; what the image lacks is absent
    assert str(PROJECT_ROOT) not in seen["processing"]
    assert "/opt/venv/lib/python3.11/site-packages/processing/" in seen["processing"]
    # (the dev tools are in this runner's environment, and benchmarks/ in the checkout)
    assert seen["missing"] == ["pytest", "moto", "hypothesis", "benchmarks"]


def test_the_staged_image_holds_the_report_templates(image, tmp_path):
    """Package data (setup.cfg's ``*.j2``): without it pip installs no templates."""
    code = (
        "from processing.report import _template as evaluation\n"
        "from monitoring.report import _template as drift\n"
        "print(evaluation('evaluation.html.j2').filename)\n"
        "print(drift('drift.html.j2').filename)"
    )
    result = run_in(image, tmp_path, code)
    assert result.returncode == 0, result.stderr
    site = "/opt/venv/lib/python3.11/site-packages/"
    assert result.stdout.split() == [
        f"{site}processing/templates/evaluation.html.j2",
        f"{site}monitoring/templates/drift.html.j2",
    ]


@ISOLATED
def test_an_isolated_job_sees_the_image_paths_and_nothing_of_the_checkout(
    image, tmp_path
):
    code = (
        "import json, os, sys; print(json.dumps({'checkout': os.path.exists("
        f"{str(PROJECT_ROOT / 'pipelines')!r}), 'opt_ml': os.path.isdir('/opt/ml'), "
        "'cwd': os.getcwd(), 'python': sys.executable, 'host': os.uname().nodename}))"
    )
    result = run_in(image, tmp_path, code, isolation="bwrap")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "checkout": False,
        "opt_ml": True,
        "cwd": read_dockerfile(DOCKERFILE).workdir,
        "python": "/opt/venv/bin/python",
        "host": "algo-1",
    }


def test_a_dockerfile_run_line_the_runner_cannot_stage_is_refused(tmp_path):
    dockerfile = variant(
        tmp_path,
        lambda text: text.replace(
            "-c constraints.txt .", "-c constraints.txt . extra-package"
        ),
    )
    with pytest.raises(ImageError, match="pip-installs one project folder"):
        stage_image(tmp_path / "images", dockerfile, PROJECT_ROOT)


def test_staging_is_once_per_content_digest(image, tmp_path):
    images = image.root.parent
    again = stage_image(images, DOCKERFILE)
    assert again.root == image.root
    changed = variant(tmp_path, lambda text: text + "\nENV EXTRA=1\n")
    other = stage_image(images, changed, PROJECT_ROOT)
    assert other.digest != image.digest and other.env["EXTRA"] == "1"


def test_installed_distributions_are_read_as_importlib_metadata_reads_them():
    from importlib import metadata

    from pipelines.image import _Dist, _site_packages

    read = 0
    for dist in metadata.distributions(path=[_site_packages()]):
        ours = _Dist.read(dist)
        assert ours is not None, dist.metadata["Name"]
        assert (ours.name, ours.version) == (dist.metadata["Name"], dist.version)
        assert ours.requires == tuple(dist.requires or ())  # folded headers included
        assert ours.files() == [str(f) for f in dist.files or []]
        read += 1
    assert read > 50


def test_staging_ahead_hands_its_image_or_its_failure_to_the_first_job(
    image, tmp_path, local_config
):
    resources = build_resources(local_config)
    runner = LocalRunner(resources, dockerfile=DOCKERFILE)
    runner.stage_image_ahead()
    runner.stage_image_ahead()  # once
    assert runner.container().image.digest == image.digest
    broken = variant(tmp_path, lambda text: text.replace("python:3.11", "python:3.9"))
    failing = LocalRunner(resources, dockerfile=broken, context=PROJECT_ROOT)
    failing.stage_image_ahead()
    from pipelines.local_runner import DefinitionError

    with pytest.raises(DefinitionError, match="cannot stage the image"):
        failing.container()


# --- (a) a module the image lacks fails the job that runs it ------------------------------


@pytest.mark.e2e
def test_a_dockerfile_without_monitoring_fails_the_loop_at_baseline(
    local_config, seeded_snowflake_dir, tmp_path
):
    import shutil

    from pipelines.definition import build_definition

    shutil.copytree(seeded_snowflake_dir, local_config.state_dir / "snowflake")
    dockerfile = variant(
        tmp_path, lambda text: text.replace("COPY monitoring ./monitoring\n", "")
    )
    runner = LocalRunner(
        build_resources(local_config), dockerfile=dockerfile, context=PROJECT_ROOT
    )
    definition = build_definition(local_config)
    execution = runner.run(definition, {"WriteBack": "false"})
    statuses = {s.name: s.status for s in execution.steps}
    assert statuses["Extract"] == statuses["Train"] == "Succeeded"
    assert execution.failed_step is not None
    assert execution.failed_step.name == "Baseline"
    assert "No module named 'monitoring'" in execution.failed_step.failure_reason


# --- (c) a non-root USER cannot write SageMaker's root-owned mounts -----------------------

WRITE_OUTPUT = "open('/opt/ml/processing/output/result.txt', 'w').write('done')"
NON_ROOT = "WORKDIR /opt/program\nUSER 1000:1000\n"


def run_as_non_root(local_config, tmp_path, isolation):
    """WRITE_OUTPUT as one step of an image whose Dockerfile adds ``USER 1000:1000``."""
    dockerfile = variant(
        tmp_path, lambda text: text.replace("WORKDIR /opt/program\n", NON_ROOT)
    )
    runner = LocalRunner(
        build_resources(local_config),
        dockerfile=dockerfile,
        context=PROJECT_ROOT,
        isolation=isolation,
    )
    return runner.run(one_step(processing("Write", WRITE_OUTPUT)))


@ISOLATED
@AS_ROOT
def test_a_non_root_user_fails_writing_its_output_as_on_sagemaker(
    local_config, tmp_path
):
    failed = run_as_non_root(local_config, tmp_path, "bwrap").failed_step
    assert failed is not None and failed.name == "Write"
    assert "PermissionError" in failed.failure_reason
    assert "/opt/ml/processing/output/result.txt" in failed.failure_reason
    # the same job under the image as it is (root) writes its output
    ours = LocalRunner(build_resources(local_config), isolation="bwrap")
    assert ours.run(one_step(processing("Write", WRITE_OUTPUT))).status == "Succeeded"


def test_without_a_sandbox_a_non_root_user_is_refused_before_it_starts(
    local_config, tmp_path
):
    execution = run_as_non_root(local_config, tmp_path, "none")
    reason = execution.failed_step.failure_reason
    assert "USER 1000:1000" in reason and "owned by root" in reason
    assert not execution.step("Write").logs  # nothing started


# --- the environment is SageMaker's, never the caller's -----------------------------------

SHOW_ENVIRONMENT = (
    "import json, os; "
    "open('/opt/ml/processing/output/env.json'.replace('/opt/ml', "
    "os.environ['OPT_ML_ROOT']), 'w').write(json.dumps(dict(os.environ)))"
)


@pytest.mark.parametrize("isolation", ["none", pytest.param("bwrap", marks=ISOLATED)])
def test_a_job_gets_the_image_env_its_request_and_sagemakers_nothing_from_the_shell(
    local_config, monkeypatch, isolation
):
    shell = {
        "MLOPS_SNOWFLAKE__ACCOUNT": "from-the-shell",
        "AWS_PROFILE": "admin",
        "AWS_SECRET_ACCESS_KEY": "shell-secret-3e9a",
        "SNOWFLAKE_PASSWORD": "shell-secret-77c1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    for key, value in shell.items():
        monkeypatch.setenv(key, value)
    runner = LocalRunner(build_resources(local_config), isolation=isolation)
    request = {"MLOPS_ENV": "local", "FROM_THE_REQUEST": "yes"}
    execution = runner.run(one_step(processing("Show", SHOW_ENVIRONMENT, request)))
    assert execution.status == "Succeeded", execution.failed_step
    seen = json.loads(
        runner.resources.store.read_bytes("s3://mlops-local/t/out/env.json")
    )
    image = runner.container().image
    platform = platform_variables(local_config)
    sagemaker = {"AWS_REGION", "AWS_DEFAULT_REGION"}
    container = {"HOSTNAME", "HOME", "OPT_ML_ROOT"}
    if isolation == "bwrap":
        container.add("PWD")  # bubblewrap's --chdir sets it (the WORKDIR)
    assert (
        set(seen)
        == set(image.env) | set(request) | set(platform) | sagemaker | container
    )
    assert not set(shell) & set(seen)
    assert seen["FROM_THE_REQUEST"] == "yes" and seen["OMP_NUM_THREADS"] == "1"
    assert seen["MLOPS_STATE_DIR"] == str(local_config.state_dir.resolve())


# --- every command a definition names starts in the image -------------------------------


def test_every_command_any_definition_names_starts_in_the_staged_image(image, tmp_path):
    from pipelines.entry_points import PLACEHOLDER_ROLE, entry_points
    from stack.config import load_config

    commands = {
        " ".join(c): c
        for env, overrides in (
            ("local", {}),
            ("dev", {"aws.role_arn": PLACEHOLDER_ROLE}),
        )
        for c in entry_points(load_config(env, overrides, environ={}))
    }
    # the training pipeline's and the monitoring pipeline's, and the serving command
    assert {"python -m processing.extract", "python -m monitoring.baseline"} <= set(
        commands
    )
    assert {"train", "serve", "python -m monitoring check"} <= set(commands)
    container = Container(image, Platform())
    failures = {}
    for name, command in commands.items():
        instance = container.instance(tmp_path / name.replace(" ", "_"), "algo-1")
        argv = container.entrypoint([*command, "--help"])
        argv, env = container.command(argv, instance, {}, {})
        result = subprocess.run(
            argv,
            env=env,
            cwd=instance.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0 or "usage" not in result.stdout.lower():
            failures[name] = (result.stdout + result.stderr)[-500:]
    assert not failures


def test_the_local_endpoint_server_starts_from_the_image(image, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH", str(PROJECT_ROOT)
    )  # the caller's, never the server's
    container = Container(image, Platform(shared=(tmp_path,)))
    argv, env = container.server_command(
        ["python", "-c", "import inference, os; print(inference.__file__)"]
    )
    result = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(image.rootfs / "opt" / "venv"))
    assert "PYTHONPATH" not in env and env["OMP_NUM_THREADS"] == "1"


CONNECT = (
    "import socket, sys; "
    "socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()"
)


@ISOLATED
def test_a_job_with_network_isolation_reaches_nothing(local_config):
    import socket as sockets

    runner = LocalRunner(build_resources(local_config), isolation="bwrap")
    with sockets.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = str(server.getsockname()[1])
        step = processing("Reach", CONNECT)
        step["Arguments"]["AppSpecification"]["ContainerArguments"] = [port]
        assert runner.run(one_step(step)).status == "Succeeded"
        step["Arguments"]["NetworkConfig"] = {"EnableNetworkIsolation": True}
        isolated = runner.run(one_step(step))
    assert isolated.status == "Failed"
    assert "Error" in isolated.failed_step.failure_reason  # refused or unreachable
