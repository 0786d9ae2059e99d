from datetime import date
from pathlib import Path

import pytest

from stack.config import ConfigError, load_config, validate_identifier


def test_local_is_the_default_environment():
    config = load_config(environ={})
    assert config.env == "local"
    assert config.snowflake.mode == "embedded"
    assert config.resources.object_store == "local"
    assert not config.is_aws


def test_environment_file_overrides_base():
    assert load_config("prod", environ={}).sagemaker.model_approval_status == (
        "PendingManualApproval"
    )
    assert load_config("dev", environ={}).sagemaker.model_approval_status == "Approved"


def test_precedence_cli_over_environment_over_files():
    environ = {
        "MLOPS_ENV": "dev",
        "MLOPS_AWS__BUCKET": "from-env",
        "MLOPS_FEATURES__AS_OF": "2025-12-31",
    }
    config = load_config(environ=environ)
    assert config.env == "dev"
    assert config.aws.bucket == "from-env"
    assert config.features.as_of == date(2025, 12, 31)
    config = load_config(environ=environ, overrides={"aws.bucket": "from-cli"})
    assert config.aws.bucket == "from-cli"


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        load_config("qa", environ={})


def test_bad_role_arn_names_the_key_and_the_variable():
    with pytest.raises(ConfigError) as error:
        load_config("dev", environ={"MLOPS_AWS__ROLE_ARN": "not-an-arn"})
    message = str(error.value)
    assert "aws.role_arn" in message and "MLOPS_AWS__ROLE_ARN" in message


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="aws.regoin"):
        load_config(environ={"MLOPS_AWS__REGOIN": "eu-west-1"})


@pytest.mark.parametrize("bad", ["PRED;DROP", "1TABLE", "a b", ""])
def test_sql_identifiers_are_validated(bad):
    with pytest.raises(ConfigError):
        validate_identifier(bad, "table")
    with pytest.raises(ConfigError):
        load_config(environ={"MLOPS_WRITEBACK__TABLE": bad or " "})


def test_password_is_a_secret(tmp_path: Path):
    config = load_config(environ={"MLOPS_SNOWFLAKE__PASSWORD": "hunter2-sentinel"})
    assert config.snowflake.password is not None
    assert config.snowflake.password.get_secret_value() == "hunter2-sentinel"
    assert "hunter2-sentinel" not in repr(config)
    assert "hunter2-sentinel" not in config.model_dump_json()


def test_missing_conf_file_fails_fast(tmp_path: Path):
    with pytest.raises(ConfigError, match="missing"):
        load_config(environ={"MLOPS_CONF_DIR": str(tmp_path)})


def test_hyperparameter_overrides_are_checked_when_the_config_loads():
    config = load_config(environ={"MLOPS_TRAINING__HYPERPARAMETERS__MAX_DEPTH": "3"})
    assert config.training.hyperparameters == {"max_depth": "3"}
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        load_config(environ={"MLOPS_TRAINING__HYPERPARAMETERS__MAX_DEPHT": "3"})
    with pytest.raises(ConfigError, match="max_depth='deep'"):
        load_config(environ={"MLOPS_TRAINING__HYPERPARAMETERS__MAX_DEPTH": "deep"})


def test_network_and_encryption_settings_are_read_from_the_environment():
    config = load_config(
        "prod",
        environ={
            "MLOPS_SECURITY__SUBNETS": "subnet-0a1b2c3d, subnet-0a1b2c3e",
            "MLOPS_SECURITY__SECURITY_GROUP_IDS": "sg-0a1b2c3d",
            "MLOPS_SECURITY__VOLUME_KMS_KEY_ID": (
                "arn:aws:kms:us-east-1:000000000000:key/"
                "1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
        },
    )
    assert config.security.subnets == ["subnet-0a1b2c3d", "subnet-0a1b2c3e"]
    assert config.security.vpc


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLOPS_SECURITY__SUBNETS": "subnet-nothex!"}, "not a subnet id"),
        (
            {"MLOPS_SECURITY__SUBNETS": "subnet-0a1b2c3d"},
            "subnets and security_group_ids go together",
        ),
        (
            {
                "MLOPS_SECURITY__SUBNETS": "subnet-0a1b2c3d",
                "MLOPS_SECURITY__SECURITY_GROUP_IDS": "default",
            },
            "not a security group id",
        ),
        ({"MLOPS_SECURITY__OUTPUT_KMS_KEY_ID": "my-key"}, "not a KMS key id"),
        ({"MLOPS_SAGEMAKER__CACHE_EXPIRE_AFTER": "30d"}, "not an ISO 8601 duration"),
        (
            {
                "MLOPS_SECURITY__NETWORK_ISOLATION": "true",
                "MLOPS_MLFLOW__TRACKING_URI": "arn:aws:sagemaker:us-east-1:0:mlflow",
            },
            "network_isolation cuts the Train step off",
        ),
    ],
)
def test_bad_network_settings_fail_when_the_config_loads(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config("dev", environ=environ)
