"""The image definition, checked by reading (no Docker engine here); hadolint runs in
tests/test_ci.py.
"""

import re

from pipelines.local_jobs import IMAGE_COMMANDS
from tests.conftest import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
ENTRYPOINT = (PROJECT_ROOT / "docker" / "entrypoint.sh").read_text()


def test_runs_as_a_numeric_non_root_user_with_a_healthcheck():
    final_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1] != "0"
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/ping", final_stage, re.M)
    assert re.search(r'^ENTRYPOINT \["', final_stage, re.M)
    assert "EXPOSE 8080" in final_stage


def test_the_entrypoint_runs_what_the_local_runner_expects():
    for command, argv in IMAGE_COMMANDS.items():
        assert f'{command}) shift; exec {" ".join(argv)} "$@"' in ENTRYPOINT
