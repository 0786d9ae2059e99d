"""Import the SageMaker SDK (v3.27) with its import-time side effects contained.

Measured with sagemaker 3.27.0 (see docs/architecture.md, "Decisions"):
- importing ``sagemaker.mlops`` creates boto3 clients and fails without a region, so a
  region is put in the environment first;
- it calls ``logging.basicConfig(level=INFO)``, so the root logger is restored after;
- it sends telemetry unless opted out, so our config file opting out is named first;
- ``ModelTrainer`` validates the role through IAM unless told not to;
- every configuration lookup re-validates the whole SDK config against its JSON schema
  (0.25 s each, 60 lookups per build: 15 s), so a config that passed once is not checked
  again (``_validate_once``);
- every ``ProcessingStep`` and ``TransformStep`` makes a ``LocalSagemakerClient`` (a
  boto3 session, its clients and the SDK config: 0.35 s each) only to read a method's
  name, so the steps get one that makes nothing (``_name_only_local_client``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_CONFIG = Path(__file__).with_name("sagemaker_config.yaml")


# The variables through which the caller's AWS settings reach boto3 (and so the SDK).
_CALLERS_AWS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@contextlib.contextmanager
def without_callers_aws(region: str) -> Iterator[None]:
    """Build a ``local`` or ``test`` definition as if no AWS settings were around.

    SDK 3.27 makes boto3 sessions of its own on import and for every step, which read
    the caller's AWS_PROFILE, keys and ~/.aws files: a missing profile stops the build
    (ProfileNotFound) and a region changes it. These builds call no AWS, so for their
    duration boto3 sees only ``region`` and no configuration files.
    """
    saved = {name: os.environ.pop(name) for name in _CALLERS_AWS if name in os.environ}
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    try:
        yield
    finally:
        for name in _CALLERS_AWS:
            os.environ.pop(name, None)
        os.environ.update(saved)


def load_sdk(region: str) -> SimpleNamespace:
    """Import the SDK pieces the definition uses; the first call takes a few seconds.

    The region is put in the environment on every call, not only at import: SDK 3.27
    builds a default boto session (``LocalSagemakerClient()`` in ``ProcessingStep``)
    each time a step is made, which fails without one.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    return _load_sdk()


@cache
def _load_sdk() -> SimpleNamespace:
    os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(_CONFIG))
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdk = _import_sdk()
    _validate_once()
    _name_only_local_client()
    root.handlers[:] = handlers
    root.setLevel(level)
    for noisy in ("sagemaker", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return sdk


def _import_sdk() -> SimpleNamespace:
    from sagemaker.core import (
        drift_check_baselines,
        model_metrics,
        network,
        parameter,
        processing,
        shapes,
    )
    from sagemaker.core.training import configs
    from sagemaker.core.workflow import (
        conditions,
        execution_variables,
        functions,
        parameters,
        pipeline_context,
        properties,
    )
    from sagemaker.mlops.workflow import (
        condition_step,
        endpoint_step,
        fail_step,
        model_step,
        pipeline,
        retry,
        steps,
    )
    from sagemaker.serve import model_builder
    from sagemaker.train import model_trainer, tuner

    return SimpleNamespace(
        Processor=processing.Processor,
        ProcessingInput=shapes.ProcessingInput,
        ProcessingOutput=shapes.ProcessingOutput,
        ProcessingS3Input=shapes.ProcessingS3Input,
        ProcessingS3Output=shapes.ProcessingS3Output,
        StoppingCondition=shapes.StoppingCondition,
        NetworkConfig=network.NetworkConfig,
        Networking=configs.Networking,
        Compute=configs.Compute,
        CheckpointConfig=configs.CheckpointConfig,
        InputData=configs.InputData,
        OutputDataConfig=configs.OutputDataConfig,
        ConditionEquals=conditions.ConditionEquals,
        ConditionGreaterThanOrEqualTo=conditions.ConditionGreaterThanOrEqualTo,
        ExecutionVariables=execution_variables.ExecutionVariables,
        Join=functions.Join,
        JsonGet=functions.JsonGet,
        ParameterFloat=parameters.ParameterFloat,
        ParameterBoolean=parameters.ParameterBoolean,
        ParameterInteger=parameters.ParameterInteger,
        ParameterString=parameters.ParameterString,
        PipelineSession=pipeline_context.PipelineSession,
        PropertyFile=properties.PropertyFile,
        MetricsSource=model_metrics.MetricsSource,
        ModelMetrics=model_metrics.ModelMetrics,
        DriftCheckBaselines=drift_check_baselines.DriftCheckBaselines,
        ConditionStep=condition_step.ConditionStep,
        EndpointConfigStep=endpoint_step.EndpointConfigStep,
        EndpointStep=endpoint_step.EndpointStep,
        FailStep=fail_step.FailStep,
        ModelStep=model_step.ModelStep,
        Pipeline=pipeline.Pipeline,
        CacheConfig=steps.CacheConfig,
        StepRetryPolicy=retry.StepRetryPolicy,
        StepExceptionTypeEnum=retry.StepExceptionTypeEnum,
        SageMakerJobStepRetryPolicy=retry.SageMakerJobStepRetryPolicy,
        SageMakerJobExceptionTypeEnum=retry.SageMakerJobExceptionTypeEnum,
        ProcessingStep=steps.ProcessingStep,
        TrainingStep=steps.TrainingStep,
        TuningStep=steps.TuningStep,
        HyperparameterTuner=tuner.HyperparameterTuner,
        IntegerParameter=parameter.IntegerParameter,
        ContinuousParameter=parameter.ContinuousParameter,
        ModelBuilder=model_builder.ModelBuilder,
        ModelTrainer=model_trainer.ModelTrainer,
    )


# Where SDK 3.27 validates a configuration against its JSON schema: the config
# manager's method and the module function, also imported by name into the session and
# local-session modules. Each check costs about 0.25 s (jsonschema re-checks the schema
# itself every time) and a build makes dozens (every Session, and every ProcessingStep
# makes a LocalSagemakerClient just to read a method name).
_VALIDATORS = (
    "sagemaker.core.config.config",
    "sagemaker.core.helper.session_helper",
    "sagemaker.core.local.local_session",
    "sagemaker.core.utils.intelligent_defaults_helper",
)


def _validate_once() -> None:
    """Memoise the SDK's config validation by the config's content: a config that
    passed once is not checked again; an invalid one raises every time, as before.
    """
    import importlib
    import json

    from sagemaker.core.config.config_manager import SageMakerConfig

    passed: set[str] = set()

    def memoised(original: Any) -> Any:
        if getattr(original, "_memoised", False):
            return original

        def validate(sagemaker_config: dict | None = None) -> None:
            key = json.dumps(sagemaker_config, sort_keys=True, default=str)
            if key not in passed:
                original(sagemaker_config)  # raises on an invalid config
                passed.add(key)

        validate._memoised = True  # type: ignore[attr-defined]
        return validate

    SageMakerConfig.validate_sagemaker_config = staticmethod(  # type: ignore[method-assign]
        memoised(SageMakerConfig.validate_sagemaker_config)
    )
    for name in _VALIDATORS:
        module = importlib.import_module(name)
        validator = memoised(getattr(module, "validate_sagemaker_config"))  # noqa: B009
        setattr(module, "validate_sagemaker_config", validator)  # noqa: B010


def _name_only_local_client() -> None:
    """Give the SDK's step module a LocalSagemakerClient that builds no session.

    ``ProcessingStep`` and ``TransformStep`` (sagemaker.mlops.workflow.steps, 3.27)
    call ``LocalSagemakerClient().create_processing_job.__name__`` (and
    ``create_transform_job``) to check where their step arguments came from: a
    method's name, which a subclass that skips ``__init__`` has too. The definition is
    unchanged (the golden-file tests compare it byte for byte).
    """
    from sagemaker.mlops.workflow import steps

    client = steps.LocalSagemakerClient
    if getattr(client, "_name_only", False):
        return

    class NameOnlyLocalSagemakerClient(client):  # type: ignore[misc, valid-type]
        _name_only = True

        def __init__(self) -> None:  # no session, no clients, no config
            pass

    steps.LocalSagemakerClient = NameOnlyLocalSagemakerClient
