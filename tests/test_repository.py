"""Guards on the repository itself: secrets, the namespace package, CI and the image."""

import re
import subprocess

from pipelines.local_jobs import IMAGE_COMMANDS
from tests.conftest import PROJECT_ROOT

SUSPICIOUS = [
    re.compile(r"\b(?!000000000000)\d{12}:role/"),  # a real account's role ARN
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an access key id
    re.compile(r"snowflakecomputing\.com"),  # a real Snowflake account host
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def tracked_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        PROJECT_ROOT / line
        for line in listed.stdout.splitlines()
        if not line.startswith("tests/")
    ]


def test_no_account_ids_keys_or_hosts_in_the_code():
    offenders = []
    for path in tracked_files():
        if not path.is_file() or path.suffix in {".png", ".gz"}:
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{path.name}: {p.pattern}" for p in SUSPICIOUS if p.search(text)]
    assert offenders == []


def test_snowflake_is_a_namespace_portion():
    assert not (PROJECT_ROOT / "snowflake" / "__init__.py").exists()
    import snowflake.connector  # noqa: F401  - still importable beside our portion

    import snowflake.sagemaker_predictions  # noqa: F401


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT_ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in quick_start.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[1] in (PROJECT_ROOT / ".ci" / "run").read_text()


def test_the_image_entrypoint_matches_what_the_local_runner_runs():
    script = (PROJECT_ROOT / "docker" / "entrypoint.sh").read_text()
    for command, argv in IMAGE_COMMANDS.items():
        assert f"{command}) shift; exec {' '.join(argv)}" in script
