"""The image definition, read as the local runner reads it (dockerfile-parse; no
Docker engine here); hadolint runs in tests/test_ci.py.
"""

import re

from pipelines.image import read_dockerfile
from pipelines.local_jobs import IMAGE_COMMANDS
from tests.conftest import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
ENTRYPOINT = (PROJECT_ROOT / "docker" / "entrypoint.sh").read_text()


def test_runs_as_root_as_sagemaker_expects_with_a_healthcheck():
    spec = read_dockerfile(PROJECT_ROOT / "Dockerfile")
    # SageMaker mounts /opt/ml owned by root: a non-root USER cannot write there
    assert spec.user in (None, "0", "root", "0:0")
    assert spec.entrypoint == ["/usr/local/bin/entrypoint.sh"]
    assert spec.env["PATH"].startswith("/opt/venv/bin:")
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/ping", final_stage, re.M)
    assert "EXPOSE 8080" in final_stage


def test_the_image_installs_every_package_the_project_declares():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(PROJECT_ROOT / "setup.cfg")
    declared = {
        line.strip().rstrip("*").split(".")[0]
        for line in setup.get("options.packages.find", "include").splitlines()
        if line.strip()
    }
    (install,) = read_dockerfile(PROJECT_ROOT / "Dockerfile").installs
    copied = {inside.split("/")[0] for inside, _ in install.tree}
    assert declared <= copied, declared - copied


def test_the_entrypoint_runs_what_the_local_runner_expects():
    for command, argv in IMAGE_COMMANDS.items():
        assert f'{command}) shift; exec {" ".join(argv)} "$@"' in ENTRYPOINT


def test_the_base_image_and_the_index_are_build_arguments_defaulting_to_public_ones():
    """A closed network builds with --build-arg BASE_IMAGE=<registry>/python:3.11-slim
    and PIP_INDEX_URL=<artifactory remote>; without them the build is today's.
    """
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile"))
    assert parser.parent_images == ["python:3.11-slim", "python:3.11-slim"]
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert froms == [
        "${BASE_IMAGE}",
        "${BASE_IMAGE}",
    ]  # both stages follow the argument
    build_stage = DOCKERFILE.split("\nFROM ", 2)[1]
    assert "ARG PIP_INDEX_URL=https://pypi.org/simple\n" in build_stage
    # pip reads PIP_INDEX_URL itself: no URL on the RUN line, none in the runtime stage
    assert "--index-url" not in DOCKERFILE
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert "PIP_INDEX_URL" not in final_stage


def test_the_local_runner_stages_the_default_base_image():
    """pipelines/image.py resolves the ARG in FROM as Docker does: the base is the
    public python image, whose Python version and ENV the local runner uses.
    """
    spec = read_dockerfile(PROJECT_ROOT / "Dockerfile")
    assert spec.base == "python:3.11-slim"
    assert spec.python_version == (3, 11)
    assert spec.env["PATH"].endswith(":/usr/bin:/sbin:/bin")


def test_the_image_carries_bytecode_for_the_standard_library_and_the_venv():
    """The python base images ship no .pyc and the image sets PYTHONDONTWRITEBYTECODE,
    so a module without bytecode built in is compiled from source at every process
    start (docs/benchmarks.md, "Bytecode in the image"). The final stage compiles both,
    hash-based, after the venv arrives, and nothing removes what it wrote.
    """
    import shlex

    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile"))
    final = parser.structure[
        max(i for i, x in enumerate(parser.structure) if x["instruction"] == "FROM") :
    ]
    instructions = [x["instruction"] for x in final]
    compiles = [
        x for x in final if x["instruction"] == "RUN" and "compileall" in x["value"]
    ]
    assert len(compiles) == 1
    (compile_run,) = compiles
    words = shlex.split(compile_run["value"])
    assert words[:3] == ["python", "-m", "compileall"]
    assert words[words.index("--invalidation-mode") + 1] == "unchecked-hash"
    assert "/opt/venv" in words
    assert (
        "get_path('stdlib')" in compile_run["value"]
    )  # the base image's, whatever it is
    # after the venv is copied in, and nothing afterwards deletes bytecode
    copy_venv = next(
        i
        for i, x in enumerate(final)
        if x["value"].startswith("--from=build /opt/venv")
    )
    assert copy_venv < final.index(compile_run)
    assert instructions.count("RUN") == 1
    assert not re.search(r"__pycache__|\*\.pyc|-delete", DOCKERFILE)
    assert read_dockerfile(PROJECT_ROOT / "Dockerfile").env["PYTHONDONTWRITEBYTECODE"]
