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


@pytest.mark.parametrize("bad", ["PRED;DROP", "1TABLE", "a b", "", "PREDICTIONS\n"])
def test_sql_identifiers_are_validated(bad):
    with pytest.raises(ConfigError):
        validate_identifier(bad, "table")
    with pytest.raises(ConfigError):
        load_config(environ={"MLOPS_WRITEBACK__TABLE": bad or " "})


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("MLOPS_AWS__PREFIX", "../outside"),
        ("MLOPS_AWS__PREFIX", "churn/'x"),
        ("MLOPS_AWS__PREFIX", "churn//v2"),
        ("MLOPS_AWS__BUCKET", ".."),
        ("MLOPS_AWS__BUCKET", "my..bucket"),
        ("MLOPS_DEPLOYMENT__DATA_CAPTURE_S3_URI", "s3://../registry/capture"),
        ("MLOPS_DEPLOYMENT__DATA_CAPTURE_S3_URI", "s3://bucket/a/../../x"),
        ("MLOPS_SAGEMAKER__CACHE_EXPIRE_AFTER", "P30D\n"),
    ],
)
def test_paths_and_prefixes_are_validated_when_the_configuration_loads(key, bad):
    with pytest.raises(
        ConfigError, match=key.removeprefix("MLOPS_").split("__")[0].lower()
    ):
        load_config(environ={key: bad})


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


# --- the configuration a job gets ---------------------------------------------------------

JOB_SECTIONS = ("resources", "aws", "snowflake", "features", "extract", "writeback")


@pytest.mark.parametrize("env", ["local", "test", "dev", "staging", "prod"])
def test_a_job_rebuilds_the_sections_its_environment_carries(env):
    from stack.config import job_environment, load_job_config

    config = load_config(
        env,
        {"aws.role_arn": "arn:aws:iam::000000000000:role/r"},
        environ={
            "MLOPS_SNOWFLAKE__ACCOUNT": "acme",
            "MLOPS_SNOWFLAKE__SESSION_PARAMETERS": '{"QUERY_TAG": "mlops"}',
            "MLOPS_SNOWFLAKE_OBJECTS__GRANT_ROLE": "",
            "MLOPS_SECURITY__SUBNETS": "subnet-0a1b2c3d",
            "MLOPS_SECURITY__SECURITY_GROUP_IDS": "sg-0a1b2c3d",
        }
        if env != "local"
        else {},
    )
    sections = (*JOB_SECTIONS, "security", "snowflake_objects", "monitoring")
    environment = job_environment(config, sections)
    assert all(len(v) <= 256 for v in environment.values())  # a processing job's limit
    rebuilt = load_job_config(environ=environment)
    for section in sections:
        if section == "aws":  # where AWS answers is the platform's, not the job's
            assert (
                rebuilt.aws.model_copy(update={"endpoint_url": config.aws.endpoint_url})
                == config.aws
            )
            continue
        assert getattr(rebuilt, section) == getattr(config, section), section


def test_a_job_environment_never_carries_a_secret_or_the_platforms_keys():
    from stack.config import job_environment

    config = load_config(
        "test",
        environ={
            "MLOPS_SNOWFLAKE__PASSWORD": "pw-sentinel-2f9c",
            "MLOPS_SNOWFLAKE__SECRET_ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:s",
            "MLOPS_AWS__ENDPOINT_URL": "http://127.0.0.1:5000",
            "MLOPS_STATE_DIR": "/somewhere",
        },
    )
    environment = job_environment(config, ("aws", "snowflake"))
    assert "pw-sentinel-2f9c" not in str(environment)
    assert "MLOPS_AWS__ENDPOINT_URL" not in environment
    assert "MLOPS_STATE_DIR" not in environment
    assert environment["MLOPS_SNOWFLAKE__SECRET_ARN"].endswith(":secret:s")
    with pytest.raises(ValueError, match="not a section"):
        job_environment(config, ("state_dir",))


def test_mlops_names_that_are_not_configuration_are_left_alone_typos_are_not():
    config = load_config(environ={"MLOPS_TEAM": "ml", "MLOPS_BUILD_NUMBER": "17"})
    assert config.env == "local"
    with pytest.raises(ConfigError, match="snowflak"):
        load_config(environ={"MLOPS_SNOWFLAK__ACCOUNT": "acme"})
    with pytest.raises(ConfigError, match="acount"):
        load_config(environ={"MLOPS_SNOWFLAKE__ACOUNT": "acme"})
