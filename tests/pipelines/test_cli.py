import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, free_port, run_cli


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unknown_environment_exits_2():
    result = run_cli("--env", "qa")
    assert result.returncode == 2
    assert "unknown environment 'qa'" in one_line_error(result)


def test_upsert_without_a_role_exits_2():
    result = run_cli("--env", "dev", "--upsert")
    assert result.returncode == 2
    assert "aws.role_arn is not set" in one_line_error(result)


def test_upsert_of_the_local_environment_is_a_usage_error():
    result = run_cli("--upsert")
    assert result.returncode == 2
    assert "needs an AWS environment" in one_line_error(result)


def test_unreachable_snowflake_exits_2(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    # a key-pair login: a reference the definition may carry (a password it may not)
    key = tmp_path / "snowflake.p8"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {
        "MLOPS_SNOWFLAKE__PORT": str(free_port()),
        "MLOPS_SNOWFLAKE__PRIVATE_KEY_PATH": str(key),
        "MLOPS_STATE_DIR": str(tmp_path),
    }
    result = run_cli("--env", "test", env=env, timeout=300)
    assert result.returncode == 2
    assert "cannot connect to Snowflake at 127.0.0.1" in one_line_error(result)


def test_bad_parameters_fail_before_any_work(tmp_path):
    result = run_cli(
        "--state-dir", str(tmp_path / "state"), "--param", "AucThreshhold=0.9"
    )
    assert result.returncode == 2
    assert "unknown parameter(s) AucThreshhold" in one_line_error(result)
    assert not (tmp_path / "state" / "snowflake").exists()
    malformed = run_cli("--param", "novalue")
    assert malformed.returncode == 2 and "NAME=VALUE" in one_line_error(malformed)
    contradiction = run_cli("--no-writeback", "--param", "WriteBack=true")
    assert contradiction.returncode == 2
    assert "contradicts" in one_line_error(contradiction)
    assert not (tmp_path / "state" / "snowflake").exists()


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"MLOPS_FEATURES__FEATURE_SET": "nope"}, "no feature set named 'nope'"),
        ({"MLOPS_FEATURES__DIRECTORY": "/nonexistent"}, "under /nonexistent"),
        ({"MLOPS_AWS__PREFIX": "../elsewhere"}, "aws.prefix"),
    ],
)
def test_configuration_that_names_what_is_not_there_exits_2_before_work(
    tmp_path, environment, message
):
    result = run_cli("--state-dir", str(tmp_path / "state"), env=environment)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in one_line_error(result)
    assert not (tmp_path / "state" / "snowflake").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_a_folder = run_cli("--state-dir", str(a_file))
    assert not_a_folder.returncode == 2
    assert "exists and is not a folder" in one_line_error(not_a_folder)


def test_a_dev_run_without_upsert_is_refused():
    result = run_cli("--env", "dev")
    assert result.returncode == 2
    assert "runs on SageMaker" in one_line_error(result)


def test_help_does_not_import_the_sagemaker_sdk():
    code = (
        "import sys, pipelines.run\n"
        "try:\n    pipelines.run.main(['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sagemaker'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_definition_of_an_aws_environment_needs_a_role():
    result = run_cli("--env", "prod", "--definition")
    assert result.returncode == 2
    assert "aws.role_arn is not set for prod" in one_line_error(result)
