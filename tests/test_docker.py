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
