"""The one place that picks implementations for an environment."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pipelines.remote import SageMakerPipelines
from pipelines.sdk import without_callers_aws
from pipelines.service import LocalPipelines, PipelineService
from stack.config import Config
from stack.endpoints import (
    RUNTIME_RETRIES,
    EndpointDeployer,
    LocalEndpoints,
    SageMakerEndpoints,
    data_capture_config,
)
from stack.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from stack.registry import LocalModelRegistry, ModelRegistry, SageMakerModelRegistry
from stack.warehouse import (
    ConnectorWarehouse,
    EmbeddedWarehouse,
    Warehouse,
    secrets_manager_resolver,
)


class AwsClients:
    """boto3 clients made on first use, all from one session and endpoint setting."""

    def __init__(self, config: Config) -> None:
        self._config = config

    @cached_property
    def session(self) -> Any:
        import boto3

        return boto3.Session(region_name=self._config.aws.region)

    def client(self, service: str) -> Any:
        options: dict[str, Any] = {"endpoint_url": self._config.aws.endpoint_url}
        if service == "sagemaker-runtime":  # EndpointClient retries (RUNTIME_RETRIES)
            from botocore.config import Config

            options["config"] = Config(retries=RUNTIME_RETRIES)
        return self.session.client(service, **options)

    def credentials_found(self) -> bool:
        return self.session.get_credentials() is not None


@dataclass
class Resources:
    config: Config
    store: ObjectStore
    registry: ModelRegistry
    endpoints: EndpointDeployer
    aws: AwsClients

    @cached_property
    def warehouse(self) -> Warehouse:
        """Snowflake, made on first use: a command that never reads it (the smoke
        test, a promotion, a rollback) needs no Snowflake settings at all.
        """
        return build_warehouse(self.config, self.aws)

    @cached_property
    def pipelines(self) -> PipelineService:
        """Where pipelines run: made on first use (the runner and the SDK stay
        unimported until then)."""
        return _pipeline_service(self.config, self.aws, lambda: self)


def build_pipelines(config: Config) -> PipelineService:
    """The pipeline service alone, for commands that need nothing else (on SageMaker
    it needs no other resource, not even Snowflake's account).
    """
    return _pipeline_service(
        config, AwsClients(config), lambda: build_resources(config)
    )


def _pipeline_service(
    config: Config, aws: AwsClients, resources: Callable[[], Resources]
) -> PipelineService:
    if config.is_aws:
        return SageMakerPipelines(
            aws.client("sagemaker"),
            config.sagemaker.pipeline_name,
            credentials_found=aws.credentials_found,
        )
    return LocalPipelines(resources())


def definition_environment(config: Config) -> contextlib.AbstractContextManager[None]:
    """Where the SageMaker SDK builds a definition: the caller's AWS session for an AWS
    environment; none of the caller's AWS settings for ``local`` and ``test``.
    """
    if config.is_aws:
        return contextlib.nullcontext()
    return without_callers_aws(config.aws.region)


def build_warehouse(config: Config, aws: AwsClients | None = None) -> Warehouse:
    snowflake = config.snowflake
    if snowflake.mode == "embedded":
        return EmbeddedWarehouse(
            config.state_dir / "snowflake", snowflake.database, snowflake.schema_name
        )
    aws = aws or AwsClients(config)
    resolver = (
        secrets_manager_resolver(aws.client("secretsmanager"))
        if snowflake.secret_arn
        else None
    )
    return ConnectorWarehouse(snowflake, resolver)


def build_resources(config: Config) -> Resources:
    """Everything outside our code, for ``config.env``; nothing connects until used,
    and Snowflake's connection object is made only when a command asks for it.
    """
    aws = AwsClients(config)
    state = config.state_dir
    choice = config.resources
    store: ObjectStore = (
        LocalObjectStore(state / "s3")
        if choice.object_store == "local"
        else S3ObjectStore(aws.client("s3"))
    )
    registry: ModelRegistry = (
        LocalModelRegistry(state / "registry", config.aws.region)
        if choice.registry == "local"
        else SageMakerModelRegistry(aws.client("sagemaker"))
    )
    endpoints: EndpointDeployer
    if choice.endpoints == "local":
        endpoints = LocalEndpoints(
            state / "endpoints",
            store,
            registry,
            host=config.local_endpoint.host,
            port=config.local_endpoint.port,
            startup_timeout=config.local_endpoint.startup_timeout_seconds,
            workers=config.local_endpoint.workers,
            data_capture=data_capture_config(config.deployment),
            capture_max_mb=config.deployment.data_capture_max_mb,
            capture_retention_hours=config.deployment.data_capture_retention_hours,
        )
    else:
        endpoints = SageMakerEndpoints(
            aws.client("sagemaker"),
            aws.client("sagemaker-runtime"),
            registry,
            deployment=config.deployment,
            role_arn=config.aws.role_arn,
            instance_type=config.sagemaker.endpoint_instance_type,
            instance_count=config.sagemaker.endpoint_instance_count,
        )
    return Resources(config, store, registry, endpoints, aws)
