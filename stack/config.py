"""Configuration: read once, validated, typed, passed down as one object.

Precedence, highest first:
  1. overrides from the command line (``load_config(overrides=...)``),
  2. environment variables ``MLOPS_<SECTION>__<FIELD>`` (e.g. ``MLOPS_AWS__ROLE_ARN``),
  3. ``conf/<env>.yaml``,
  4. ``conf/base.yaml``,
  5. the defaults declared on the models below.

The environment is chosen by ``--env``, else ``MLOPS_ENV``, else ``local``. Nothing
else in the project reads ``os.environ`` for configuration: step entry points read only
the SageMaker container contract.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# re-exported: every configuration check raises ConfigError
from stack.identifiers import IDENTIFIER as _IDENTIFIER
from stack.identifiers import ConfigError as ConfigError
from stack.identifiers import validate_identifier as validate_identifier
from stack.objectstore import ObjectStoreError, check_bucket, split_uri
from stack.registry import LOCAL_ROLE
from training.hyperparameters import (
    HYPERPARAMETER_TYPES,
    HyperparameterError,
    parse_hyperparameters,
)

ENVIRONMENTS = ("local", "test", "dev", "staging", "prod")
# The environment when none is named (no --env, no MLOPS_ENV): the embedded one. A
# command that only ever talks to SageMaker (the Projects template's run-pipeline, a
# promotion's source) defaults to the first AWS environment instead.
DEFAULT_ENV = "local"
DEFAULT_AWS_ENV = "dev"
ENV_PREFIX = "MLOPS_"
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_=.-]{1,200}")
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KMS_KEY = re.compile(
    rf"^({_UUID}|alias/[\w/-]{{1,250}}"
    rf"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{{12}}:(key/{_UUID}|alias/[\w/-]{{1,250}}))$"
)
# ISO 8601 durations as SageMaker's CacheConfig takes them: P30D, PT12H, P4DT12H ...
ISO8601_DURATION = re.compile(
    r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsConfig(_Section):
    region: str = "us-east-1"
    role_arn: str | None = None
    bucket: str = "mlops-local"
    prefix: str = "churn"
    # Points every AWS client at another endpoint (moto in tests); None means AWS
    # itself.
    endpoint_url: str | None = None

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        try:
            return check_bucket(value)
        except ObjectStoreError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # it names S3 keys, the stage's path (extract.route copy_into) and folders
        parts = value.split("/")
        if not all(_PREFIX_PART.fullmatch(p) and p not in (".", "..") for p in parts):
            raise ValueError(
                f"{value!r}: use folders of letters, digits, _ = . - separated by '/' "
                "(no empty, '.' or '..' folder)"
            )
        return value


class SnowflakeConfig(_Section):
    # embedded: fakesnow on DuckDB files in the state folder; connector: the real
    # Snowflake connector (Snowflake itself, or a fakesnow server in tests).
    mode: Literal["embedded", "connector"] = "embedded"
    account: str | None = None
    user: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: Literal["https", "http"] = "https"
    warehouse: str | None = None
    role: str | None = None
    database: str = "MLOPS"
    schema_name: str = Field("CHURN", alias="schema")
    # Secrets: a Secrets Manager secret (JSON with user/password or private_key), a
    # private key file, or a password from MLOPS_SNOWFLAKE__PASSWORD. Resolved at
    # connect.
    secret_arn: str | None = None
    private_key_path: str | None = None
    password: SecretStr | None = None
    # Passed to the connector as session parameters (e.g. QUERY_TAG; FAKESNOW_DB_PATH in
    # tests, which makes a fakesnow server open the DuckDB files of a folder).
    session_parameters: dict[str, str] = Field(default_factory=dict)
    # Snowflake Time Travel (AT(TIMESTAMP => ...)) pins the extract's reads to one point
    # in time. False where the server has none (a fakesnow server in tests); the
    # embedded warehouse never has it (stack/warehouse.py).
    time_travel: bool = True
    login_timeout: int = Field(20, ge=1, le=600)
    network_timeout: int = Field(60, ge=1, le=3600)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("database", "schema_name", "warehouse", "role")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid Snowflake identifier")
        return value


class SageMakerConfig(_Section):
    pipeline_name: str = "churn-pipeline"
    # Our one image: processing and training entry points plus the serving stack.
    image_uri: str = "local/snowflake-sagemaker-mlops:latest"
    processing_instance_type: str = "ml.m5.xlarge"
    processing_instance_count: int = Field(1, ge=1, le=100)
    training_instance_type: str = "ml.m5.xlarge"
    endpoint_name: str = "churn-endpoint"
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_instance_count: int = Field(1, ge=1, le=100)
    model_package_group: str = "churn-models"
    model_approval_status: Literal["Approved", "PendingManualApproval", "Rejected"] = (
        "Approved"
    )
    max_runtime_seconds: int = Field(3600, ge=60)
    # Step caching of Extract, Train and Evaluate: how old a previous run may be to be
    # reused (ISO 8601 duration); None turns caching off.
    cache_expire_after: str | None = "P30D"
    # Retries of throttling, service faults and capacity errors, per step.
    retry_max_attempts: int = Field(3, ge=1, le=20)
    # Managed spot training for the Train step (cheaper, interruptible): checkpoints
    # go to <artifact root>/checkpoints and an interrupted job resumes from them.
    spot_training: bool = False
    # How long a spot job may wait for capacity plus run; at least max_runtime_seconds.
    spot_max_wait_seconds: int = Field(7200, ge=60)

    @field_validator("cache_expire_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if not value:  # "" from an environment variable turns caching off too
            return None
        if not ISO8601_DURATION.fullmatch(value.upper()):
            raise ValueError(f"{value!r} is not an ISO 8601 duration such as P30D")
        return value.upper()

    @field_validator("pipeline_name", "endpoint_name", "model_package_group")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SAGEMAKER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid SageMaker resource name")
        return value


class SecurityConfig(_Section):
    """Network and encryption settings applied to every job and the endpoint."""

    # A VPC for every job: subnets and security groups go together.
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    # KMS keys (id, alias or ARN) for instance volumes and for what jobs write to S3.
    volume_kms_key_id: str | None = None
    output_kms_key_id: str | None = None
    encrypt_inter_container_traffic: bool = False
    # No network at all for the steps that need none (Evaluate; Train unless it logs
    # to a remote MLflow tracking server).
    network_isolation: bool = False

    @field_validator("subnets", "security_group_ids", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # MLOPS_SECURITY__SUBNETS=subnet-a,subnet-b
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _SUBNET.fullmatch(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a subnet id (subnet-0abc...)")
        return value

    @field_validator("security_group_ids")
    @classmethod
    def _security_groups(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _SECURITY_GROUP.fullmatch(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a security group id (sg-0abc...)")
        return value

    @field_validator("volume_kms_key_id", "output_kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY.fullmatch(value):
            raise ValueError(f"{value!r} is not a KMS key id, alias or ARN")
        return value

    @model_validator(mode="after")
    def _vpc_complete(self) -> SecurityConfig:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError(
                "subnets and security_group_ids go together: set both or neither"
            )
        return self

    @property
    def vpc(self) -> bool:
        return bool(self.subnets)


class FeaturesConfig(_Section):
    feature_set: str = "churn"
    as_of: date = date(2026, 3, 31)
    label_window_days: int = Field(90, ge=1, le=3650)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    # A folder holding <feature_set>/{features.sql,schema.yaml}; None: the packaged
    # features/ folder. Lets a team point at its own SQL and schema without code.
    directory: Path | None = None


class ExtractConfig(_Section):
    """How the Extract step moves rows from Snowflake to Parquet."""

    # connector: the step streams the query in slices into Parquet (the default);
    # copy_into: Snowflake unloads Parquet to an external stage itself.
    route: Literal["connector", "copy_into"] = "connector"
    # rows per slice of the query (each slice is fetched and written, then dropped;
    # about 700 bytes per row of 21 columns in flight). Each slice re-runs the query
    # in Snowflake: an expensive query wants larger slices (Snowflake's own result
    # chunks still bound memory there) or the copy_into route.
    slice_rows: int = Field(100_000, ge=1, le=50_000_000)
    row_group_rows: int = Field(100_000, ge=1, le=10_000_000)
    # copy_into: the external stage (storage integration) whose URL is aws.bucket/prefix
    stage: str | None = None
    max_file_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, le=5 * 1024**3)

    @field_validator("stage")
    @classmethod
    def _stage(cls, value: str | None) -> str | None:
        if value is not None:
            for part in value.split("."):
                if not _IDENTIFIER.fullmatch(part):
                    raise ValueError(f"{value!r} is not a valid stage name")
        return value

    @model_validator(mode="after")
    def _stage_for_copy_into(self) -> ExtractConfig:
        if self.route == "copy_into" and not self.stage:
            raise ValueError("route copy_into needs extract.stage (an external stage)")
        return self


class TuningRange(_Section):
    """One hyperparameter's search range (SageMaker's Integer/ContinuousParameterRange:
    an integer hyperparameter gets an integer range)."""

    min: float
    max: float
    # Auto: SageMaker chooses (the local runner searches it linearly)
    scaling: Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"] = "Auto"

    @model_validator(mode="after")
    def _ordered(self) -> TuningRange:
        if not self.min < self.max:
            raise ValueError(f"min {self.min:g} must be below max {self.max:g}")
        if self.scaling == "Logarithmic" and self.min <= 0:
            raise ValueError("a Logarithmic range needs min above 0")
        if self.scaling == "ReverseLogarithmic" and not (0 <= self.min < self.max < 1):
            raise ValueError("a ReverseLogarithmic range needs 0 <= min < max < 1")
        return self


def _default_ranges() -> dict[str, TuningRange]:
    return {
        "max_depth": TuningRange(min=3, max=8, scaling="Linear"),
        "eta": TuningRange(min=0.03, max=0.3, scaling="Logarithmic"),
        "num_round": TuningRange(min=100, max=600, scaling="Linear"),
        "min_child_weight": TuningRange(min=1, max=10, scaling="Logarithmic"),
        "subsample": TuningRange(min=0.6, max=1.0, scaling="Linear"),
    }


class TuningConfig(_Section):
    """A tuning step (SageMaker's hyperparameter tuning job) in place of the single
    Train step: ``max_jobs`` training jobs over ``ranges``, ``max_parallel_jobs`` at a
    time, the best by ``validation:auc`` feeding Evaluate. Off by default, so the
    default loop trains once.
    """

    enabled: bool = False
    strategy: Literal["Bayesian", "Random"] = "Bayesian"
    # the defaults of the MaxNumberOfTrainingJobs / MaxParallelTrainingJobs parameters
    # (SageMaker's default quotas: 500 jobs per tuning job, 100 at a time)
    max_jobs: int = Field(8, ge=1, le=500)
    max_parallel_jobs: int = Field(2, ge=1, le=100)
    random_seed: int = Field(7, ge=0)
    ranges: dict[str, TuningRange] = Field(default_factory=_default_ranges)

    @field_validator("ranges")
    @classmethod
    def _tunable(cls, value: dict[str, TuningRange]) -> dict[str, TuningRange]:
        if not value:
            raise ValueError("a tuning job needs at least one range")
        for name, bounds in value.items():
            kind = HYPERPARAMETER_TYPES.get(name)
            if kind not in (int, float):
                numeric = sorted(
                    n for n, k in HYPERPARAMETER_TYPES.items() if k in (int, float)
                )
                raise ValueError(
                    f"{name!r} is not a numeric hyperparameter; tunable: "
                    f"{', '.join(numeric)}"
                )
            if kind is int and not (
                float(bounds.min).is_integer() and float(bounds.max).is_integer()
            ):
                raise ValueError(f"{name} is an integer: its range needs whole bounds")
        return value


class TrainingConfig(_Section):
    # Overrides of training.hyperparameters.DEFAULTS, checked when the config loads.
    hyperparameters: dict[str, str | int | float] = Field(default_factory=dict)
    tuning: TuningConfig = TuningConfig()

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(
        cls, value: dict[str, str | int | float]
    ) -> dict[str, str | int | float]:
        try:
            parse_hyperparameters({k: str(v) for k, v in value.items()})
        except HyperparameterError as exc:
            raise ValueError(str(exc)) from None
        return value


class EvaluationConfig(_Section):
    auc_threshold: float = Field(0.7, ge=0.0, le=1.0)
    # How much lower than the champion's (same test split) a challenger's AUC may be
    # and still be registered.
    champion_tolerance: float = Field(0.01, ge=0.0, le=1.0)


class MlflowConfig(_Section):
    # None: a SQLite store in the state folder (local). On AWS, the ARN of a SageMaker
    # managed MLflow tracking server.
    tracking_uri: str | None = None
    experiment: str | None = None


class DemoConfig(_Section):
    customers: int = Field(100_000, ge=100, le=10_000_000)
    seed: int = 7


class LocalEndpointConfig(_Section):
    host: Literal["127.0.0.1", "localhost"] = "127.0.0.1"
    port: int = Field(8080, ge=1024, le=65535)
    startup_timeout_seconds: int = Field(60, ge=1, le=600)
    workers: int = Field(2, ge=1, le=64)  # server worker processes, one model each


class DeploymentConfig(_Section):
    """How a new model reaches a SageMaker endpoint (blue/green, with rollback)."""

    strategy: Literal["all_at_once", "canary", "linear"] = "all_at_once"
    canary_percent: int = Field(10, ge=1, le=99)  # canary: the first step's share
    linear_step_percent: int = Field(25, ge=1, le=99)  # linear: each step's share
    wait_interval_seconds: int = Field(300, ge=0, le=3600)  # bake time per step
    termination_wait_seconds: int = Field(0, ge=0, le=3600)  # keep blue after shift
    max_execution_seconds: int = Field(1800, ge=600, le=28800)
    # CloudWatch alarms that roll the update back when they fire (names, not ARNs).
    rollback_alarms: list[str] = Field(default_factory=list)
    # Data capture of requests and responses; None: off.
    data_capture_s3_uri: str | None = None
    data_capture_percent: int = Field(100, ge=1, le=100)
    # What the capture keeps: a total size of the endpoint's capture prefix (MB) and
    # an age (hours since a file's last record). Always bounded: no value turns a
    # bound off. The local endpoint sweeps both (inference/capture.py); on AWS the age
    # is the S3 lifecycle rule on the prefix (infra/platform.yaml, whole days rounded
    # up) and S3 has no size bound.
    data_capture_max_mb: int = Field(1024, ge=1, le=1024 * 1024)
    data_capture_retention_hours: int = Field(168, ge=1, le=24 * 3650)
    variant_name: str = "AllTraffic"
    wait_timeout_seconds: int = Field(3600, ge=60, le=28800)

    @field_validator("data_capture_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                split_uri(value)
            except ObjectStoreError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def data_capture_retention_days(self) -> int:
        """The age bound in whole days, rounded up: an S3 lifecycle rule's unit."""
        return -(-self.data_capture_retention_hours // 24)


_ENTITY_TYPE = re.compile(r"^(NUMBER\(\d{1,2},0\)|INTEGER|VARCHAR(\(\d{1,8}\))?)$")


class WritebackConfig(_Section):
    table: str = "PREDICTIONS"
    batch_rows: int = Field(2000, ge=1, le=100_000)
    # endpoint requests in flight (boto3 keeps 10 connections per client)
    concurrency: int = Field(4, ge=1, le=10)
    as_of: date | None = None  # None: the training as-of date
    # the WriteBack pipeline parameter's default: a WriteBack step after Deploy
    in_pipeline: bool = False
    # how long the WriteBack step waits for the endpoint to be InService
    endpoint_wait_seconds: int = Field(1800, ge=0, le=14_400)
    # The SQL type of the entity id column of PREDICTIONS
    entity_type: str = "NUMBER(38,0)"

    @field_validator("entity_type")
    @classmethod
    def _entity_type(cls, value: str) -> str:
        if not _ENTITY_TYPE.fullmatch(value):
            raise ValueError(f"{value!r}: use NUMBER(p,0), INTEGER or VARCHAR(n)")
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid Snowflake identifier")
        return value


_HTTPS_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_TASK_SCHEDULE = re.compile(
    r"^(\d{1,5} MINUTES?|USING CRON [0-9*/,-]+( [0-9A-Za-z*/,#?L-]+){4} [A-Za-z_/+-]+)$"
)


class SnowflakeObjectsConfig(_Section):
    """The objects ``python -m snowflake.sagemaker_predictions deploy`` creates."""

    api_integration: str = "SAGEMAKER_PREDICTIONS_API"
    # API Gateway in front of the endpoint, and the prefixes the integration allows
    api_url: str | None = None
    api_allowed_prefixes: list[str] = Field(default_factory=list)
    # The IAM role API Gateway trusts; set by the CD runner
    # (MLOPS_SNOWFLAKE_OBJECTS__API_AWS_ROLE_ARN), never in conf files.
    api_aws_role_arn: str | None = None
    function: str = "PREDICT_CHURN"
    procedure: str = "SCORE_NEW_PREDICTIONS"
    # The internal stage holding the procedure's code, one folder per release
    code_stage: str = "SAGEMAKER_PREDICTIONS_CODE"
    task: str = "SCORE_PREDICTIONS"
    schedule: str = "USING CRON 0 6 * * * UTC"
    # The role the readers of PREDICTIONS (BI, analysts) use; None: no grants.
    grant_role: str | None = "PREDICTIONS_READER"
    # None: the largest batch whose JSON stays under the payload limit
    max_batch_rows: int | None = Field(None, ge=1, le=100_000)

    @field_validator(
        "api_integration", "function", "procedure", "code_stage", "task", "grant_role"
    )
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value == "":  # MLOPS_SNOWFLAKE_OBJECTS__GRANT_ROLE= turns grants off
            return None
        if value is not None and not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid Snowflake identifier")
        return value

    @field_validator("api_allowed_prefixes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _HTTPS_URL.fullmatch(value):
            raise ValueError(f"{value!r} is not an https URL")
        return value

    @field_validator("api_allowed_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _HTTPS_URL.fullmatch(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not an https URL prefix")
        return value

    @field_validator("api_aws_role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not _TASK_SCHEDULE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a task schedule ('60 MINUTE' or "
                "'USING CRON <min> <hour> <day> <month> <weekday> <time zone>')"
            )
        return value

    @model_validator(mode="after")
    def _url_is_allowed(self) -> SnowflakeObjectsConfig:
        if self.api_url and not any(
            self.api_url.startswith(p) for p in self.api_allowed_prefixes
        ):
            raise ValueError(
                "api_url must start with one of api_allowed_prefixes "
                "(Snowflake refuses the external function otherwise)"
            )
        return self


_SCHEDULE_EXPRESSION = re.compile(
    r"^(cron\([0-9A-Za-z*?/,#L -]{9,100}\)"
    r"|rate\(\d{1,4} (minute|minutes|hour|hours|day|days)\))$"
)


class MonitoringConfig(_Section):
    """Model health after deployment: the drift check and what retrains the model."""

    # What the drift check reads: the endpoint's data capture, or the scores written
    # back to Snowflake's PREDICTIONS table (features recomputed for their as-of date).
    source: Literal["capture", "predictions"] = "capture"
    lookback_hours: int = Field(24, ge=1, le=24 * 90)  # capture window
    min_rows: int = Field(200, ge=1)  # fewer rows: no judgement of drift
    # Per-feature drift: PSI over the baseline's deciles, and a KS test that flags a
    # feature only when both its statistic and its p-value pass the thresholds
    # (with 100k rows any shift is "significant").
    psi_threshold: float = Field(0.2, gt=0)
    ks_statistic_threshold: float = Field(0.1, gt=0, le=1)
    ks_p_value: float = Field(0.01, gt=0, lt=1)
    prediction_psi_threshold: float = Field(0.2, gt=0)
    # How much the share of present values may fall below the baseline's.
    completeness_tolerance: float = Field(0.05, ge=0, le=1)
    # The share of values outside the baseline's [min, max] allowed per feature.
    out_of_range_tolerance: float = Field(0.01, ge=0, le=1)
    # The share of values of the wrong type (not numbers; fractions for an integral
    # feature) allowed per feature.
    type_mismatch_tolerance: float = Field(0.0, ge=0, le=1)
    # Performance once labels arrive: a violation when the AUC on newly labelled
    # rows is lower than the model's test AUC by more than this.
    auc_drop_threshold: float = Field(0.05, gt=0, le=1)
    min_labelled_rows: int = Field(200, ge=1)
    # The last day with complete data for labels; None: today (UTC).
    labels_through: date | None = None
    # Retraining: on a violation, and every retrain_every_days since the model's
    # training as-of date (None: only on violations).
    retrain_on_violation: bool = True
    retrain_every_days: int | None = Field(30, ge=1, le=3650)
    # On AWS: when the monitoring pipeline runs (an EventBridge schedule expression).
    schedule: str = "cron(0 5 * * ? *)"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not _SCHEDULE_EXPRESSION.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an EventBridge schedule expression "
                "('cron(0 5 * * ? *)' or 'rate(1 day)')"
            )
        return value


class ResourcesConfig(_Section):
    """Which implementation stands behind each outside system."""

    object_store: Literal["local", "s3"] = "local"
    registry: Literal["local", "sagemaker"] = "local"
    endpoints: Literal["local", "sagemaker"] = "local"


class Config(_Section):
    env: Literal["local", "test", "dev", "staging", "prod"] = "local"
    state_dir: Path = Path(".state")
    resources: ResourcesConfig = ResourcesConfig()
    aws: AwsConfig = AwsConfig()
    snowflake: SnowflakeConfig = SnowflakeConfig()
    sagemaker: SageMakerConfig = SageMakerConfig()
    security: SecurityConfig = SecurityConfig()
    features: FeaturesConfig = FeaturesConfig()
    extract: ExtractConfig = ExtractConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    mlflow: MlflowConfig = MlflowConfig()
    demo: DemoConfig = DemoConfig()
    local_endpoint: LocalEndpointConfig = LocalEndpointConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    writeback: WritebackConfig = WritebackConfig()
    snowflake_objects: SnowflakeObjectsConfig = SnowflakeObjectsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a folder")
        return value

    @model_validator(mode="after")
    def _isolation_allows_tracking(self) -> Config:
        if self.security.network_isolation and self.mlflow.tracking_uri:
            raise ValueError(
                "security.network_isolation cuts the Train step off from the MLflow "
                "tracking server in mlflow.tracking_uri: turn one of them off"
            )
        return self

    @property
    def is_aws(self) -> bool:
        """True for the environments whose pipelines run on SageMaker itself."""
        return self.env in ("dev", "staging", "prod")

    @property
    def execution_role(self) -> str:
        """The role the pipeline and its jobs run as: ``aws.role_arn``; local runs
        need none, but the request shapes want an ARN (``LOCAL_ROLE``).

        Raises:
            ConfigError: an AWS environment without ``aws.role_arn``.
        """
        if self.aws.role_arn:
            return self.aws.role_arn
        if self.is_aws:
            raise ConfigError(
                f"aws.role_arn is not set for {self.env} "
                "(pass --role-arn or set MLOPS_AWS__ROLE_ARN)"
            )
        return LOCAL_ROLE

    @property
    def jobs_tracking_uri(self) -> str | None:
        """The MLflow tracking server the pipeline's jobs log to:
        ``mlflow.tracking_uri``; without one, the embedded stack's own store, and none
        on AWS."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return None if self.is_aws else self.mlflow_tracking_uri

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_location(self) -> str:
        """Where the local tracking store's experiments keep their artifacts."""
        return (self.state_dir / "mlflow-artifacts").resolve().as_uri()

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.aws.bucket}/{self.aws.prefix}"


def conf_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the YAML files live: ``MLOPS_CONF_DIR``, the source tree, or the
    install.
    """
    explicit = (os.environ if environ is None else environ).get("MLOPS_CONF_DIR")
    if explicit:
        return Path(explicit)
    source_tree = Path(__file__).resolve().parents[1] / "conf"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "snowflake-sagemaker-mlops" / "conf"


def load_config(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration for ``env`` once, with the precedence in the module doc.

    Args:
        env: ``local``, ``test``, ``dev``, ``staging`` or ``prod``; None reads
            ``MLOPS_ENV``.
        overrides: dotted keys from the command line, e.g.
            ``{"aws.role_arn": "..."}``.
        environ: the environment to read (``os.environ`` unless given; tests pass a
            dict).

    Raises:
        ConfigError: naming the bad key and what to do about it.
    """
    environ = os.environ if environ is None else environ
    env = _environment_name(env or environ.get(f"{ENV_PREFIX}ENV"))
    merged: dict[str, Any] = {}
    directory = conf_dir(environ)
    for name in ("base", env):
        _deep_merge(merged, _read_yaml(directory / f"{name}.yaml"))
    _deep_merge(merged, _from_environ(environ))
    return _validated(merged, env, overrides)


def _environment_name(env: str | None) -> str:
    env = env or DEFAULT_ENV
    if env not in ENVIRONMENTS:
        raise ConfigError(
            f"unknown environment {env!r} (choose one of {', '.join(ENVIRONMENTS)})"
        )
    return env


def _validated(
    merged: dict[str, Any], env: str, overrides: Mapping[str, Any] | None
) -> Config:
    """``merged`` with the command line's ``overrides`` on top, as a Config."""
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _deep_merge(merged, _nest(dotted.split("."), value))
    merged["env"] = env
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"configuration file {path} is missing")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def _from_environ(environ: Mapping[str, str], job: bool = False) -> dict[str, Any]:
    """The ``MLOPS_*`` variables as nested configuration.

    ``MLOPS_<SECTION>__<KEY>`` names a key and must exist (a typo is refused when the
    configuration is validated); any other ``MLOPS_<NAME>`` that names no top-level key
    (``MLOPS_TEAM``, a CI's ``MLOPS_BUILD``) is not ours and is left alone. Values
    written as JSON objects or lists (``{"QUERY_TAG": "x"}``) are read as such; in a
    job's environment (``job``) so is JSON ``null`` (``job_environment`` writes it).
    """
    result: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_CONFIGURATION:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] not in Config.model_fields:
            continue
        _deep_merge(result, _nest(path, _decode(value, job)))
    return result


_NOT_CONFIGURATION = (f"{ENV_PREFIX}ENV", f"{ENV_PREFIX}CONF_DIR")


def _decode(value: str, job: bool) -> Any:
    text = value.strip()
    if text.startswith(("{", "[")) or (job and text == "null"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


# What a local job learns from the local platform (pipelines.local_jobs), never from
# its definition: where this machine keeps the stand-ins for AWS's services (the state
# folder: the embedded Snowflake, the object store, the registry) and where the local
# endpoint listens, and where "AWS" answers (moto in the ``test`` environment; boto3
# reads AWS_ENDPOINT_URL itself). A definition never carries these keys.
PLATFORM_KEYS = ("state_dir", "local_endpoint", "aws.endpoint_url")
# Secrets never reach a definition: a job resolves them at run time by reference
# (snowflake.secret_arn, snowflake.private_key_path).
SECRET_KEYS = {"snowflake": ("password",)}


def job_environment(config: Config, sections: Sequence[str]) -> dict[str, str]:
    """The ``MLOPS_*`` entries that give a job ``sections`` of ``config``.

    A SageMaker job sees only its request's ``Environment`` (and its inputs), so the
    definition carries every setting a job reads: each value of those sections that
    differs from the defaults declared in this module (which the image holds too),
    as ``MLOPS_<SECTION>__<KEY>``: strings as they are, anything else as JSON. Secrets
    never: a password set for a Snowflake the job connects to is refused.

    Raises:
        ConfigError: a section holds a secret the job would need.
    """
    entries: dict[str, str] = {f"{ENV_PREFIX}ENV": config.env}
    for section in sections:
        if section in PLATFORM_KEYS or section not in Config.model_fields:
            raise ValueError(f"{section!r} is not a section a definition carries")
        model = getattr(config, section)
        _refuse_secrets(config, section)
        left_out = {*SECRET_KEYS.get(section, ()), *_platform_fields(section)}
        values = model.model_dump(
            mode="json", exclude_defaults=True, exclude=left_out, by_alias=True
        )
        for key, value in sorted(values.items()):
            name = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            entries[name] = value if isinstance(value, str) else _json(value)
    return entries


def _platform_fields(section: str) -> set[str]:
    return {
        key.split(".", 1)[1] for key in PLATFORM_KEYS if key.startswith(section + ".")
    }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _refuse_secrets(config: Config, section: str) -> None:
    snowflake = config.snowflake
    referenced = snowflake.secret_arn or snowflake.private_key_path
    if (
        section == "snowflake"
        and snowflake.mode == "connector"
        and snowflake.password
        and not referenced
    ):
        raise ConfigError(
            "snowflake.password is set, but a pipeline job never gets a secret from "
            "its definition: give the job a reference instead (snowflake.secret_arn, "
            "a Secrets Manager secret, or snowflake.private_key_path in the image)"
        )


def load_job_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The configuration of a job the pipeline runs, from its environment alone.

    No ``conf/*.yaml``: on SageMaker a job has only its request, so what it reads is
    the defaults declared here, the ``MLOPS_*`` entries its definition carries
    (``job_environment``) and, on the local runner, the platform's (``PLATFORM_KEYS``).

    Raises:
        ConfigError: naming the bad key.
    """
    environ = os.environ if environ is None else environ
    env = _environment_name(environ.get(f"{ENV_PREFIX}ENV"))
    return _validated(_from_environ(environ, job=True), env, overrides)


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    node: Any = value
    for part in reversed(path):
        node = {part: node}
    return node


def _deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message} (set it in conf/*.yaml or {env_name})")
    return "; ".join(problems)
