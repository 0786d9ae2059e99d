"""The dev definition, byte for byte, as committed in golden/dev.json.

A change to the pipeline shows up here as a diff a reviewer reads: the definition is what
SageMaker stores and keys its step cache on. When the change is meant, refresh the file:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_golden.py

and commit golden/dev.json (and dev-tuning.json, the same with a tuning step) with the
change that caused it.
"""

import difflib
import json
import os
from pathlib import Path

import pytest

from pipelines.definition import build_definition
from stack.config import load_config

from .test_validation import SECURE

GOLDEN = Path(__file__).with_name("golden") / "dev.json"
# What the CD runner sets for dev (.harness/pipeline.yaml): the jobs get it through the
# definition (each step's Environment), the secret by reference only.
DEV = {
    **SECURE,
    "MLOPS_SNOWFLAKE__ACCOUNT": "acme-analytics",
    "MLOPS_SNOWFLAKE__USER": "SVC_MLOPS",
    "MLOPS_SNOWFLAKE__ROLE": "ML_PIPELINE",
    "MLOPS_SNOWFLAKE__SECRET_ARN": (
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:snowflake-mlops"
    ),
}


def render(definition) -> str:
    return json.dumps(definition, indent=2, sort_keys=True) + "\n"


# dev with a tuning step in place of Train (training.tuning.enabled)
GOLDEN_TUNING = GOLDEN.with_name("dev-tuning.json")
DEV_TUNING = {**DEV, "MLOPS_TRAINING__TUNING__ENABLED": "true"}


@pytest.mark.parametrize(
    ("golden", "environ"),
    [(GOLDEN, DEV), (GOLDEN_TUNING, DEV_TUNING)],
    ids=["dev", "dev-tuning"],
)
def test_the_dev_definition_matches_the_golden_file(golden, environ):
    current = render(build_definition(load_config("dev", environ=environ)))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(current)
    expected = golden.read_text()
    if current != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), current.splitlines(True), "golden", "built"
            )
        )
        raise AssertionError(
            "the dev definition changed; if that is meant, refresh it with "
            "UPDATE_GOLDEN=1 (see this module's docstring)\n" + diff[:4000]
        )


def test_two_builds_in_separate_processes_are_byte_identical(tmp_path):
    import subprocess
    import sys

    outputs = []
    for i in range(2):
        target = tmp_path / f"definition-{i}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.run",
                "--env",
                "dev",
                "--definition",
                str(target),
            ],
            check=True,
            env={**os.environ, **DEV},
            capture_output=True,
            timeout=120,
        )
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].decode() == GOLDEN.read_text()
