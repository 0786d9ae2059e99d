"""From specs and a configuration to the SageMaker SDK's steps.

``PipelineBuilder`` holds what every step of one pipeline shares (the SDK, the
configuration, the session, the role, the parameters, the execution's S3 prefix) and
the steps built so far, so that a spec's references (``pipelines.spec``) resolve to the
SDK's properties of earlier steps. ``processing(spec)`` builds a processing job on our
image with the environment's security settings, caching and retries; the steps that
are not processing jobs (training, registration, deployment, conditions) are built by
their pipeline's module with the same builder's helpers.

The SDK is imported when a builder is made, never at this module's import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import reduce
from typing import Any

from pipelines.sdk import load_sdk
from pipelines.spec import (
    EVERY_PARAMETER,
    EXECUTION_ID,
    MODEL,
    Argument,
    Output,
    Parameter,
    ProcessingSpec,
    Reference,
    ReportValue,
    Setting,
    StepOutput,
    StepProperty,
)
from stack.config import Config, job_environment
from stack.resources import AwsClients


def load_sdk_for(config: Config) -> Any:
    """The SageMaker SDK's names (``pipelines.sdk``), for ``config``'s region."""
    return load_sdk(config.aws.region)


def make_session(config: Config, boto_session: Any | None = None) -> Any:
    """A PipelineSession with the bucket and region fixed, so building needs no AWS
    call.
    """
    sdk = load_sdk_for(config)
    if boto_session is None:
        # the environment's session (for local and test builds, made inside
        # stack.resources.definition_environment: no caller's AWS)
        boto_session = AwsClients(config).session
    return sdk.PipelineSession(
        boto_session=boto_session, default_bucket=config.aws.bucket
    )


class PipelineBuilder:
    """The steps of one pipeline, built in order from specs and by hand."""

    def __init__(
        self, config: Config, session: Any, parameters: Sequence[Any] = ()
    ) -> None:
        self.sdk = load_sdk_for(config)
        self.config = config
        self.session = session
        self.role = config.execution_role
        self.parameters = {p.name: p for p in parameters}
        self.execution_id = self.sdk.ExecutionVariables.PIPELINE_EXECUTION_ID
        self.steps: dict[str, Any] = {}
        self.model: Any = None  # the training step's model archive, once built
        self._property_files: dict[str, Any] = {}
        self._base = self.sdk.Join(
            on="/", values=[config.artifact_root, self.execution_id]
        )

    # --- processing jobs --------------------------------------------------------------

    def processing(self, spec: ProcessingSpec) -> Any:
        """The ProcessingStep ``spec`` declares, after the steps it reads from."""
        sdk = self.sdk
        missing = spec.needs() - self.steps.keys()
        if missing:
            raise ValueError(
                f"{spec.name} reads from {', '.join(sorted(missing))}, "
                "not built before it"
            )
        files = [
            sdk.PropertyFile(name=f.name, output_name=f.output, path=f.path)
            for f in spec.property_files
        ]
        run: dict[str, Any] = {}
        if spec.inputs:
            run["inputs"] = [
                self.input(i.name, self.value(i.source), i.local_path)
                for i in spec.inputs
            ]
        if spec.outputs:
            run["outputs"] = [self.output(o) for o in spec.outputs]
        if spec.arguments:
            run["arguments"] = list(self._arguments(spec.arguments))
        step = sdk.ProcessingStep(
            name=spec.name,
            **self.policies(cached=spec.cached, retried=spec.retried),
            step_args=self._processor(spec).run(**run),
            **({"property_files": files} if files else {}),
        )
        return self.add(step, *files)

    def add(self, step: Any, *property_files: Any) -> Any:
        """Record a step built by hand, so that later specs can read from it."""
        if step.name in self.steps:
            raise ValueError(f"two steps are named {step.name}")
        self.steps[step.name] = step
        self._property_files.update({f.name: f for f in property_files})
        return step

    def _processor(self, spec: ProcessingSpec) -> Any:
        sm, security = self.config.sagemaker, self.config.security
        environment: dict[str, str] = job_environment(self.config, spec.sections)
        tracking_uri = self.config.jobs_tracking_uri
        if spec.tracking and tracking_uri:
            environment["MLFLOW_TRACKING_URI"] = tracking_uri
        return self.sdk.Processor(
            image_uri=sm.image_uri,
            role=self.role,
            instance_count=self.value(spec.instance_count)
            if isinstance(spec.instance_count, Parameter)
            else spec.instance_count,
            instance_type=sm.processing_instance_type,
            entrypoint=list(spec.command),
            sagemaker_session=self.session,
            env=environment,
            max_runtime_in_seconds=sm.max_runtime_seconds,
            volume_kms_key=security.volume_kms_key_id,
            output_kms_key=security.output_kms_key_id,
            network_config=self.network_config(
                isolated=spec.offline and security.network_isolation
            ),
        )

    def _arguments(self, arguments: Sequence[Argument]) -> Iterator[Any]:
        for argument in arguments:
            if isinstance(argument, str):
                yield argument
            elif argument is EVERY_PARAMETER:
                for parameter in self.parameters.values():
                    yield "--param"
                    yield self.sdk.Join(on="=", values=[parameter.name, parameter])
            else:
                yield self.value(argument)

    # --- references -------------------------------------------------------------------

    def value(self, reference: Reference) -> Any:
        """What ``reference`` is in the SDK's terms (a value or a pipeline variable)."""
        if isinstance(reference, Parameter):
            parameter = self.parameters[reference.name]
            return parameter.to_string() if reference.text else parameter
        if isinstance(reference, Setting):
            found = reduce(getattr, reference.path.split("."), self.config)
            return str(found)
        if isinstance(reference, StepOutput):
            outputs = self.steps[reference.step].properties.ProcessingOutputConfig
            return outputs.Outputs[reference.output].S3Output.S3Uri
        if isinstance(reference, ReportValue):
            return self.report_value(
                reference.step, reference.property_file, reference.path
            )
        if isinstance(reference, StepProperty):
            return getattr(self.steps[reference.step].properties, reference.name)
        if reference is EXECUTION_ID:
            return self.execution_id
        if reference is MODEL:
            if self.model is None:
                raise ValueError("the model is read before a training step made it")
            return self.model
        raise TypeError(f"not a reference: {reference!r}")

    def report_value(self, step: str, property_file: str, path: str) -> Any:
        return self.sdk.JsonGet(
            step_name=step,
            property_file=self._property_files[property_file],
            json_path=path,
        )

    # --- shared settings --------------------------------------------------------------

    def under(self, *parts: str) -> Any:
        """A prefix under this execution's folder of the artifact root."""
        return self.sdk.Join(on="/", values=[self._base, *parts])

    def output(self, output: Output) -> Any:
        return self.sdk.ProcessingOutput(
            output_name=output.name,
            s3_output=self.sdk.ProcessingS3Output(
                s3_uri=self.under(*(output.folder or (output.name,))),
                local_path=output.local_path,
                s3_upload_mode="EndOfJob",
            ),
        )

    def input(self, name: str, uri: Any, local_path: str) -> Any:
        return self.sdk.ProcessingInput(
            input_name=name,
            s3_input=self.sdk.ProcessingS3Input(
                s3_uri=uri,
                local_path=local_path,
                s3_data_type="S3Prefix",
                s3_input_mode="File",
            ),
        )

    def policies(self, cached: bool, retried: bool = True) -> dict[str, Any]:
        """Retries for a job step when ``retried``, and SageMaker's step cache when
        ``cached``.

        SageMaker keys its cache on a step's resolved arguments (image, entry point,
        environment, inputs, hyperparameters), so a rerun with the same parameters
        reuses the previous outputs until they are ``cache_expire_after`` old.
        """
        sdk, sm = self.sdk, self.config.sagemaker
        policies: dict[str, Any] = {}
        if retried:
            policies["retry_policies"] = [
                sdk.StepRetryPolicy(
                    exception_types=[
                        sdk.StepExceptionTypeEnum.THROTTLING,
                        sdk.StepExceptionTypeEnum.SERVICE_FAULT,
                    ],
                    interval_seconds=10,
                    backoff_rate=2.0,
                    max_attempts=sm.retry_max_attempts,
                ),
                sdk.SageMakerJobStepRetryPolicy(
                    exception_types=[
                        sdk.SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                        sdk.SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                        sdk.SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                    ],
                    interval_seconds=60,
                    backoff_rate=2.0,
                    max_attempts=sm.retry_max_attempts,
                ),
            ]
        if cached and sm.cache_expire_after:
            policies["cache_config"] = sdk.CacheConfig(
                enable_caching=True, expire_after=sm.cache_expire_after
            )
        return policies

    def network_config(self, isolated: bool) -> Any:
        """A processing job's network: the VPC, isolation and encryption settings."""
        security = self.config.security
        if not (security.vpc or isolated or security.encrypt_inter_container_traffic):
            return None
        return self.sdk.NetworkConfig(
            enable_network_isolation=isolated,
            subnets=security.subnets or None,
            security_group_ids=security.security_group_ids or None,
            encrypt_inter_container_traffic=security.encrypt_inter_container_traffic
            or None,
        )

    def networking(self) -> Any:
        """A training job's network: isolated when configured (then no MLflow)."""
        security = self.config.security
        if not (
            security.vpc
            or security.network_isolation
            or security.encrypt_inter_container_traffic
        ):
            return None
        return self.sdk.Networking(
            subnets=security.subnets or None,
            security_group_ids=security.security_group_ids or None,
            enable_network_isolation=security.network_isolation,
            enable_inter_container_traffic_encryption=(
                security.encrypt_inter_container_traffic
            ),
        )

    def pipeline(self, name: str, steps: Sequence[Any]) -> Any:
        """The SDK's Pipeline of ``steps`` (the top level; conditions hold the rest)."""
        return self.sdk.Pipeline(
            name=name,
            parameters=list(self.parameters.values()),
            steps=list(steps),
            sagemaker_session=self.session,
        )
