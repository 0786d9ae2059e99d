"""The SageMaker pipeline: Extract → Train → Evaluate → Gate → CheckAuc → Register →
Deploy → (WriteBack, when the ``WriteBack`` parameter is true).

``get_pipeline(config, session)`` builds it with the SageMaker SDK v3; its JSON
definition is what ``--upsert`` sends to SageMaker and what the local runner executes.
The code runs inside our image as modules, so nothing is uploaded while building and the
build makes no AWS call. Everything environment-specific comes from ``config``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

from processing.preflight import FINGERPRINT_PATH
from processing.preflight import OUTPUT_DIR as PREFLIGHT_OUTPUT
from stack.config import Config, ConfigError, TuningConfig, job_environment
from stack.endpoints import data_capture_config
from stack.registry import LOCAL_ACCOUNT
from training.distributed import (
    DEFAULT_INSTANCE_COUNT as DEFAULT_TRAINING_INSTANCE_COUNT,
)
from training.hyperparameters import DEFAULTS, HYPERPARAMETER_TYPES
from training.metric_lines import METRIC_DEFINITIONS, OBJECTIVE_METRIC

# Preflight checks the parameters and fingerprints the source data (never cached: its
# fingerprint is Extract's argument, so cached steps mean the same data).
PREFLIGHT, PREFLIGHT_REPORT = "Preflight", "PreflightReport"
EXTRACT, TRAIN, EVALUATE = "Extract", "Train", "Evaluate"
# Tune replaces Train when training.tuning is enabled: a hyperparameter tuning job whose
# best training job's model feeds Evaluate
TUNE = "Tune"
# Baseline: the training data's statistics and constraints (Model Monitor's format),
# registered with the model as its drift-check baselines (monitoring.baseline).
BASELINE = "Baseline"
# CheckAuc applies the registration gate (the absolute AUC rule and the champion rule,
# see processing.gate); AucTooLow is its FailStep, whose message names the rule.
CHECK_AUC, REGISTER, AUC_TOO_LOW = "CheckAuc", "Register", "AucTooLow"
# Track puts the registered package's ARN on the execution's MLflow run
TRACK = "Track"
CHECK_APPROVAL, CREATE_MODEL, ENDPOINT_CONFIG, DEPLOY = (
    "CheckApproval",
    "CreateModel",
    "EndpointConfig",
    "Deploy",
)
CHECK_WRITEBACK, WRITEBACK, WRITEBACK_REPORT = (
    "CheckWriteBack",
    "WriteBack",
    "WritebackReport",
)
EVALUATION_REPORT, GATE, GATE_REPORT = "EvaluationReport", "Gate", "GateReport"
AUC_PATH = "binary_classification_metrics.auc.value"
GATE_DECISION_PATH, GATE_RULE_PATH = "gate.decision", "gate.rule"
SPLITS = ("train", "validation", "test")
WRITEBACK_OUTPUT = "/opt/ml/processing/writeback"
# The configuration sections each job reads. A job on SageMaker sees only its request,
# so its Environment carries them (stack.config.job_environment); the jobs not listed
# read nothing but their inputs and arguments.
JOB_SECTIONS: dict[str, tuple[str, ...]] = {
    PREFLIGHT: ("aws", "snowflake", "features"),
    EXTRACT: ("aws", "snowflake", "extract", "features"),
    GATE: ("resources", "aws"),
    WRITEBACK: ("resources", "aws", "snowflake", "features", "writeback"),
}


def make_session(config: Config, boto_session: Any | None = None) -> Any:
    """A PipelineSession with the bucket and region fixed, so building needs no AWS
    call.
    """
    from pipelines.sdk import load_sdk

    sdk = load_sdk(config.aws.region)
    if boto_session is None:
        import boto3

        # for local and test builds, inside build_environment: no caller's AWS
        boto_session = boto3.Session(region_name=config.aws.region)
    return sdk.PipelineSession(
        boto_session=boto_session, default_bucket=config.aws.bucket
    )


# An ARN-shaped stand-in, in the placeholder account of local resources; never sent to
# AWS (a definition for dev/staging/prod needs the real role).
LOCAL_ROLE = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/local-execution"


def _role(config: Config) -> str:
    """The execution role; local runs need none, but the request shapes want an ARN."""
    if config.aws.role_arn:
        return config.aws.role_arn
    if config.is_aws:
        raise ConfigError(
            f"aws.role_arn is not set for {config.env} "
            "(pass --role-arn or set MLOPS_AWS__ROLE_ARN)"
        )
    return LOCAL_ROLE


def get_pipeline(config: Config, session: Any) -> Any:
    """Build the pipeline for ``config`` on ``session`` (a PipelineSession)."""
    sdk = load_sdk_for(config)
    sm = config.sagemaker
    role = _role(config)
    p_as_of = sdk.ParameterString(
        "AsOfDate", default_value=config.features.as_of.isoformat()
    )
    p_window = sdk.ParameterInteger(
        "LabelWindowDays", default_value=config.features.label_window_days
    )
    p_instances = sdk.ParameterInteger(
        "ProcessingInstanceCount", default_value=sm.processing_instance_count
    )
    # Hosts of the Train step: XGBoost's distributed training over shares of the
    # data, the first host writing the model (training.distributed)
    p_training_instances = sdk.ParameterInteger(
        "TrainingInstanceCount", default_value=DEFAULT_TRAINING_INSTANCE_COUNT
    )
    p_threshold = sdk.ParameterFloat(
        "AucThreshold", default_value=config.evaluation.auc_threshold
    )
    p_approval = sdk.ParameterString(
        "ModelApprovalStatus", default_value=sm.model_approval_status
    )
    # The Snowflake point in time the Extract reads (Time Travel): an ISO timestamp,
    # or "latest" for the time the Extract starts. A parameter, not the execution's
    # start time, so that step caching still keys on what was read.
    p_data_version = sdk.ParameterString("DataVersion", default_value="latest")
    p_tolerance = sdk.ParameterFloat(
        "ChampionTolerance", default_value=config.evaluation.champion_tolerance
    )
    # The commit of the code that runs: `pipelines.run` passes it when it starts an
    # execution. A parameter, so it changes Train's cache key only when the code does.
    p_git_commit = sdk.ParameterString("GitCommit", default_value="unknown")
    # Score the active entities into Snowflake's PREDICTIONS once the endpoint serves
    p_writeback = sdk.ParameterBoolean(
        "WriteBack", default_value=config.writeback.in_pipeline
    )
    parameters = [
        p_as_of,
        p_window,
        p_instances,
        p_threshold,
        p_approval,
        p_data_version,
        p_tolerance,
        p_git_commit,
        p_writeback,
        p_training_instances,
    ]
    hyperparameters: dict[str, Any] = {
        **DEFAULTS,
        "feature_set": config.features.feature_set,
        **config.training.hyperparameters,
    }
    tuning = config.training.tuning if config.training.tuning.enabled else None
    tuning_output = f"{config.artifact_root}/tuning"
    # the hyperparameters worth setting per execution are pipeline parameters too,
    # unless a tuning step searches them
    tuned = {
        name: kind(parameter, default_value=convert(hyperparameters[name]))
        for name, parameter, kind, convert in (
            ("max_depth", "MaxDepth", sdk.ParameterInteger, int),
            ("eta", "LearningRate", sdk.ParameterFloat, float),
            ("num_round", "NumRound", sdk.ParameterInteger, int),
        )
        if not (tuning and name in tuning.ranges)
    }
    parameters.extend(tuned.values())
    if tuning:
        p_max_jobs = sdk.ParameterInteger(
            "MaxNumberOfTrainingJobs", default_value=tuning.max_jobs
        )
        p_max_parallel = sdk.ParameterInteger(
            "MaxParallelTrainingJobs", default_value=tuning.max_parallel_jobs
        )
        # bound to the tuning step's ResourceLimits by build_definition (SDK 3.27's
        # ResourceLimits refuses pipeline variables)
        parameters.extend([p_max_jobs, p_max_parallel])

    execution_id = sdk.ExecutionVariables.PIPELINE_EXECUTION_ID
    base = sdk.Join(on="/", values=[config.artifact_root, execution_id])

    def under(*parts: str) -> Any:
        return sdk.Join(on="/", values=[base, *parts])

    def output(name: str, local_path: str, *folder: str) -> Any:
        """A job's output uploaded at its end to this execution's ``folder`` (by
        default the output's name)."""
        return sdk.ProcessingOutput(
            output_name=name,
            s3_output=sdk.ProcessingS3Output(
                s3_uri=under(*(folder or (name,))),
                local_path=local_path,
                s3_upload_mode="EndOfJob",
            ),
        )

    def step_env(step: str) -> dict[str, str]:
        return job_environment(config, JOB_SECTIONS.get(step, ()))

    security = config.security
    job_policies = _job_step_policies(sdk, config)

    def processor(
        entrypoint: list[str],
        env: dict[str, Any],
        instance_count: Any = 1,
        isolated: bool = False,
    ) -> Any:
        """A processing job on our image, with the environment's security settings."""
        return sdk.Processor(
            image_uri=sm.image_uri,
            role=role,
            instance_count=instance_count,
            instance_type=sm.processing_instance_type,
            entrypoint=entrypoint,
            sagemaker_session=session,
            env=env,
            max_runtime_in_seconds=sm.max_runtime_seconds,
            volume_kms_key=security.volume_kms_key_id,
            output_kms_key=security.output_kms_key_id,
            network_config=_network_config(sdk, config, isolated=isolated),
        )

    preflight_report = sdk.PropertyFile(
        name=PREFLIGHT_REPORT, output_name="preflight", path="preflight.json"
    )
    preflight_processor = processor(
        ["python", "-m", "processing.preflight"], step_env(PREFLIGHT)
    )
    preflight = sdk.ProcessingStep(
        name=PREFLIGHT,
        retry_policies=job_policies["retry_policies"],
        step_args=preflight_processor.run(
            outputs=[output("preflight", PREFLIGHT_OUTPUT)],
            arguments=[
                "--feature-set",
                config.features.feature_set,
                "--output-dir",
                PREFLIGHT_OUTPUT,
                *(
                    item
                    for parameter in parameters
                    for item in (
                        "--param",
                        sdk.Join(on="=", values=[parameter.name, parameter]),
                    )
                ),
            ],
        ),
        property_files=[preflight_report],
    )
    extract_processor = processor(
        ["python", "-m", "processing.extract"],
        step_env(EXTRACT),
        instance_count=p_instances,
    )
    extract = sdk.ProcessingStep(
        name=EXTRACT,
        **job_policies,
        step_args=extract_processor.run(
            outputs=[
                output(split, f"/opt/ml/processing/output/{split}", "features", split)
                for split in SPLITS
            ],
            arguments=[
                "--feature-set",
                config.features.feature_set,
                "--as-of",
                p_as_of,
                "--label-window-days",
                p_window.to_string(),
                "--validation-fraction",
                str(config.features.validation_fraction),
                "--test-fraction",
                str(config.features.test_fraction),
                "--data-version",
                p_data_version,
                # the data's fingerprint: changed data, changed cache key
                "--data-fingerprint",
                sdk.JsonGet(
                    step_name=PREFLIGHT,
                    property_file=preflight_report,
                    json_path=FINGERPRINT_PATH,
                ),
            ],
        ),
    )

    def split_uri(split: str) -> Any:
        return extract.properties.ProcessingOutputConfig.Outputs[split].S3Output.S3Uri

    # No execution id in the environment: SageMaker's cache key includes it, so it
    # would defeat step caching (training reads it from TRAINING_JOB_NAME instead).
    train_env: dict[str, Any] = {"GIT_COMMIT": p_git_commit}
    tracking_uri = config.mlflow.tracking_uri or (
        None if config.is_aws else config.mlflow_tracking_uri
    )
    if tracking_uri:
        train_env["MLFLOW_TRACKING_URI"] = tracking_uri
        train_env["MLFLOW_EXPERIMENT_NAME"] = (
            config.mlflow.experiment or sm.pipeline_name
        )
    if tracking_uri and not config.mlflow.tracking_uri:
        # the local store keeps run artifacts beside it, not in a job's folder
        train_env["MLFLOW_ARTIFACT_LOCATION"] = config.mlflow_artifact_location
    # Gate logs the evaluation and its verdict in a run of its own execution, a child
    # of the training run, and reads the registry (MLOPS_ENV names the configuration
    # that says which one) for the champion.
    gate_env: dict[str, str] = step_env(GATE)
    if tracking_uri:
        gate_env["MLFLOW_TRACKING_URI"] = tracking_uri
    trainer = sdk.ModelTrainer(
        training_image=sm.image_uri,
        role=role,
        sagemaker_session=session,
        base_job_name=f"{sm.pipeline_name}-train",
        compute=sdk.Compute(
            instance_type=sm.training_instance_type,
            instance_count=p_training_instances,
            volume_kms_key_id=security.volume_kms_key_id,
            enable_managed_spot_training=sm.spot_training or None,
        ),
        networking=_networking(sdk, config),
        stopping_condition=sdk.StoppingCondition(
            max_runtime_in_seconds=sm.max_runtime_seconds,
            **(
                {
                    "max_wait_time_in_seconds": max(
                        sm.spot_max_wait_seconds, sm.max_runtime_seconds
                    )
                }
                if sm.spot_training
                else {}
            ),
        ),
        # A fixed prefix (no execution id: that would defeat step caching); training
        # resumes only from a checkpoint of the same inputs (training.checkpoints).
        checkpoint_config=sdk.CheckpointConfig(
            s3_uri=f"{config.artifact_root}/checkpoints/train",
            local_path="/opt/ml/checkpoints",
        )
        if sm.spot_training
        else None,
        hyperparameters={
            **hyperparameters,
            **{name: p.to_string() for name, p in tuned.items()},
        },
        environment=train_env,
        output_data_config=sdk.OutputDataConfig(
            # a tuning job's trials under one fixed prefix (their names are unique):
            # the best model's URI must not name the execution, or a cached Tune
            # step would hand on a model under this execution's prefix, not its own
            s3_output_path=tuning_output if tuning else under("model"),
            kms_key_id=security.output_kms_key_id,
        ),
    )
    channels = [
        sdk.InputData(channel_name=split, data_source=split_uri(split))
        for split in ("train", "validation")
    ]
    if tuning:
        train = sdk.TuningStep(
            name=TUNE,
            **job_policies,
            step_args=_tuner(sdk, trainer, tuning).tune(inputs=channels),
        )
        # the best training job's model (get_top_model_s3_uri(0, ...): the service
        # lists the jobs best first)
        model_data = sdk.Join(
            on="/",
            values=[
                tuning_output,
                train.properties.TrainingJobSummaries[0].TrainingJobName,
                "output",
                "model.tar.gz",
            ],
        )
    else:
        train = sdk.TrainingStep(
            name=TRAIN,
            **job_policies,
            step_args=trainer.train(input_data_config=channels),
        )
        model_data = train.properties.ModelArtifacts.S3ModelArtifacts

    model_input = _s3_input(sdk, "model", model_data, "/opt/ml/processing/model")
    baseline_processor = processor(
        ["python", "-m", "monitoring.baseline"],
        step_env(BASELINE),
        isolated=security.network_isolation,
    )
    baseline = sdk.ProcessingStep(
        name=BASELINE,
        **job_policies,
        step_args=baseline_processor.run(
            inputs=[
                model_input,
                _s3_input(sdk, "train", split_uri("train"), "/opt/ml/processing/train"),
                _s3_input(sdk, "test", split_uri("test"), "/opt/ml/processing/test"),
            ],
            outputs=[output("baseline", "/opt/ml/processing/baseline")],
        ),
    )
    baseline_prefix = baseline.properties.ProcessingOutputConfig.Outputs[
        "baseline"
    ].S3Output.S3Uri

    def baseline_file(name: str) -> Any:
        return sdk.MetricsSource(
            content_type="application/json",
            s3_uri=sdk.Join(on="/", values=[baseline_prefix, name]),
        )

    report = sdk.PropertyFile(
        name=EVALUATION_REPORT, output_name="evaluation", path="evaluation.json"
    )
    evaluate_processor = processor(
        ["python", "-m", "processing.evaluate"],
        step_env(EVALUATE),
        isolated=security.network_isolation,
    )
    evaluate = sdk.ProcessingStep(
        name=EVALUATE,
        **job_policies,
        step_args=evaluate_processor.run(
            inputs=[
                model_input,
                _s3_input(sdk, "test", split_uri("test"), "/opt/ml/processing/test"),
            ],
            outputs=[output("evaluation", "/opt/ml/processing/evaluation")],
        ),
        property_files=[report],
    )
    evaluation_prefix = evaluate.properties.ProcessingOutputConfig.Outputs[
        "evaluation"
    ].S3Output.S3Uri

    # The gate reads the registry and its verdict depends on the current champion,
    # which can change between executions with the same arguments: a step of its own,
    # never cached, so that Evaluate (model and test split only) can be.
    gate_report = sdk.PropertyFile(
        name=GATE_REPORT, output_name="gate", path="evaluation.json"
    )
    gate_processor = processor(["python", "-m", "processing.gate"], gate_env)
    gate = sdk.ProcessingStep(
        name=GATE,
        retry_policies=job_policies["retry_policies"],
        step_args=gate_processor.run(
            inputs=[
                _s3_input(
                    sdk,
                    "evaluation",
                    evaluation_prefix,
                    "/opt/ml/processing/evaluation",
                ),
                _s3_input(sdk, "test", split_uri("test"), "/opt/ml/processing/test"),
            ],
            outputs=[output("gate", "/opt/ml/processing/gate")],
            arguments=[
                "--auc-threshold",
                p_threshold.to_string(),
                "--champion-tolerance",
                p_tolerance.to_string(),
                "--model-package-group",
                sm.model_package_group,
                # the MLflow run it records belongs to this execution; never cached,
                # so a per-execution argument costs no cache hit
                "--execution-id",
                execution_id,
            ],
        ),
        property_files=[gate_report],
    )

    def from_report(path: str) -> Any:
        return sdk.JsonGet(step_name=GATE, property_file=gate_report, json_path=path)

    auc = from_report(AUC_PATH)
    gate_prefix = gate.properties.ProcessingOutputConfig.Outputs["gate"].S3Output.S3Uri
    evaluation_uri = sdk.Join(on="/", values=[gate_prefix, "evaluation.json"])
    report_uri = sdk.Join(on="/", values=[gate_prefix, "report.html"])

    register = sdk.ModelStep(
        name=REGISTER,
        step_args=sdk.ModelBuilder(
            s3_model_data_url=model_data,
            image_uri=sm.image_uri,
            sagemaker_session=session,
            role_arn=role,
            dependencies={},  # the code is in the image: nothing to upload
        ).register(
            model_package_group_name=sm.model_package_group,
            content_types=["text/csv", "application/json"],
            response_types=["application/json", "text/csv"],
            inference_instances=[sm.endpoint_instance_type],
            transform_instances=[sm.endpoint_instance_type],
            approval_status=p_approval,
            model_metrics=sdk.ModelMetrics(
                model_statistics=sdk.MetricsSource(
                    content_type="application/json", s3_uri=evaluation_uri
                )
            ),
            drift_check_baselines=sdk.DriftCheckBaselines(
                model_data_statistics=baseline_file("statistics.json"),
                model_data_constraints=baseline_file("constraints.json"),
            ),
            customer_metadata_properties={
                "pipeline_execution_id": execution_id,
                "as_of_date": p_as_of,
                "label_window_days": p_window.to_string(),
                "data_version": from_report("data_window.data_version"),
                "feature_set": config.features.feature_set,
                "git_commit": p_git_commit,
                # this execution's run (gate, package ARN) and the training run
                "mlflow_run_id": from_report("tracking.run_id"),
                "mlflow_training_run_id": from_report("tracking.training_run_id"),
                "test_auc": sdk.Join(on="", values=[auc]),
                # what SCORE is: the calibration the artifact carries, in words
                "score": from_report("calibration.score"),
                "report_uri": report_uri,
            },
        ),
    )
    # The registered package's ARN onto the execution's MLflow run (never cached)
    track_steps = []
    if tracking_uri:
        track = sdk.ProcessingStep(
            name=TRACK,
            retry_policies=job_policies["retry_policies"],
            step_args=processor(
                ["python", "-m", "processing.tracking"],
                {**step_env(TRACK), "MLFLOW_TRACKING_URI": tracking_uri},
            ).run(
                arguments=[
                    "--run-id",
                    from_report("tracking.run_id"),
                    "--model-package-arn",
                    register.properties.ModelPackageArn,
                ],
            ),
        )
        track_steps.append(track)
    deploy_steps = _deploy_steps(sdk, config, session, role, register, execution_id)
    writeback_processor = processor(
        ["python", "-m", "snowflake.sagemaker_predictions", "writeback"],
        step_env(WRITEBACK),
    )
    # Never cached: the entities to score change between executions with the same
    # arguments. Rerunning it is safe: a rerun changes nothing (keyed MERGE).
    writeback = sdk.ProcessingStep(
        name=WRITEBACK,
        retry_policies=job_policies["retry_policies"],
        step_args=writeback_processor.run(
            outputs=[output("writeback", WRITEBACK_OUTPUT)],
            arguments=[
                "--endpoint",
                sm.endpoint_name,
                "--model-package-arn",
                register.properties.ModelPackageArn,
                "--execution-id",
                execution_id,
                "--wait-for-endpoint",
                str(config.writeback.endpoint_wait_seconds),
                "--output-dir",
                WRITEBACK_OUTPUT,
            ],
        ),
        property_files=[
            sdk.PropertyFile(
                name=WRITEBACK_REPORT, output_name="writeback", path="writeback.json"
            )
        ],
    )
    check_writeback = sdk.ConditionStep(
        name=CHECK_WRITEBACK,
        depends_on=[DEPLOY],  # the endpoint it scores through
        conditions=[sdk.ConditionEquals(left=p_writeback, right=True)],
        if_steps=[writeback],
        else_steps=[],
    )
    check_approval = sdk.ConditionStep(
        name=CHECK_APPROVAL,
        conditions=[sdk.ConditionEquals(left=p_approval, right="Approved")],
        if_steps=[*deploy_steps, check_writeback],
        else_steps=[],
    )
    too_low = sdk.FailStep(
        name=AUC_TOO_LOW,
        error_message=sdk.Join(
            on=" ",
            values=[
                "The model was not registered. Decided by the",
                from_report(GATE_RULE_PATH),
            ],
        ),
    )
    check_auc = sdk.ConditionStep(
        name=CHECK_AUC,
        conditions=[
            # the absolute rule, checked here too, and the gate's whole decision
            sdk.ConditionGreaterThanOrEqualTo(left=auc, right=p_threshold),
            sdk.ConditionEquals(left=from_report(GATE_DECISION_PATH), right="register"),
        ],
        if_steps=[register, *track_steps, check_approval],
        else_steps=[too_low],
    )
    return sdk.Pipeline(
        name=sm.pipeline_name,
        parameters=parameters,
        steps=[preflight, extract, train, baseline, evaluate, gate, check_auc],
        sagemaker_session=session,
    )


def _deploy_steps(
    sdk: Any, config: Config, session: Any, role: str, register: Any, execution_id: Any
) -> list[Any]:
    """CreateModel (from the registered package) → EndpointConfig → Endpoint."""
    sm = config.sagemaker
    holder = _ModelHolder(session)
    session.init_model_step_arguments(holder)
    session.create_model(
        name=sdk.Join(on="-", values=[sm.endpoint_name, execution_id]),
        role=role,
        container_defs=[{"ModelPackageName": register.properties.ModelPackageArn}],
    )
    model_args = session.context
    session.context = None
    create_model = sdk.ModelStep(name=CREATE_MODEL, step_args=model_args)
    endpoint_config = sdk.EndpointConfigStep(
        name=ENDPOINT_CONFIG,
        step_args=session.create_endpoint_config(
            name=sdk.Join(on="-", values=[sm.endpoint_name, execution_id]),
            production_variants=[
                {
                    "VariantName": config.deployment.variant_name,
                    "ModelName": create_model.properties.ModelName,
                    "InitialInstanceCount": sm.endpoint_instance_count,
                    "InstanceType": sm.endpoint_instance_type,
                }
            ],
            kms_key=config.security.volume_kms_key_id,
            data_capture_config_dict=data_capture_config(config.deployment),
        ),
    )
    deploy = sdk.EndpointStep(
        name=DEPLOY,
        step_args=session.create_endpoint(
            endpoint_name=sm.endpoint_name,
            config_name=endpoint_config.properties.EndpointConfigName,
        ),
    )
    return [create_model, endpoint_config, deploy]


class _ModelHolder:
    """What ``PipelineSession.init_model_step_arguments`` expects to hold a model's
    session.

    SDK 3.27 captures a CreateModel request for a ModelStep only through a model object;
    our model is the registered package, so this stands in for one.
    """

    def __init__(self, session: Any) -> None:
        self.sagemaker_session = session


def _job_step_policies(sdk: Any, config: Config) -> dict[str, Any]:
    """Caching and retries shared by the job steps (Extract, Train, Evaluate).

    SageMaker keys its cache on a step's resolved arguments (image, entry point,
    environment, inputs, hyperparameters), so a rerun with the same parameters reuses
    the previous outputs until they are ``cache_expire_after`` old.
    """
    sm = config.sagemaker
    policies: dict[str, Any] = {
        "retry_policies": [
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
    }
    if sm.cache_expire_after:
        policies["cache_config"] = sdk.CacheConfig(
            enable_caching=True, expire_after=sm.cache_expire_after
        )
    return policies


def _network_config(sdk: Any, config: Config, isolated: bool) -> Any:
    security = config.security
    if not (security.vpc or isolated or security.encrypt_inter_container_traffic):
        return None
    return sdk.NetworkConfig(
        enable_network_isolation=isolated,
        subnets=security.subnets or None,
        security_group_ids=security.security_group_ids or None,
        encrypt_inter_container_traffic=security.encrypt_inter_container_traffic
        or None,
    )


def _networking(sdk: Any, config: Config) -> Any:
    """The Train step's network: isolated when configured (no MLflow server then)."""
    security = config.security
    if not (
        security.vpc
        or security.network_isolation
        or security.encrypt_inter_container_traffic
    ):
        return None
    return sdk.Networking(
        subnets=security.subnets or None,
        security_group_ids=security.security_group_ids or None,
        enable_network_isolation=security.network_isolation,
        enable_inter_container_traffic_encryption=(
            security.encrypt_inter_container_traffic
        ),
    )


def _tuner(sdk: Any, trainer: Any, tuning: TuningConfig) -> Any:
    """A tuning job over ``trainer``'s training job: ``tuning.ranges`` searched by
    ``tuning.strategy`` for the highest ``validation:auc``, as the training log
    reports it (training.metric_lines)."""
    ranges = {}
    for name, bounds in tuning.ranges.items():
        if HYPERPARAMETER_TYPES[name] is int:
            ranges[name] = sdk.IntegerParameter(
                int(bounds.min), int(bounds.max), scaling_type=bounds.scaling
            )
        else:
            ranges[name] = sdk.ContinuousParameter(
                bounds.min, bounds.max, scaling_type=bounds.scaling
            )
    return sdk.HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=OBJECTIVE_METRIC,
        objective_type="Maximize",
        metric_definitions=METRIC_DEFINITIONS,
        hyperparameter_ranges=ranges,
        strategy=tuning.strategy,
        max_jobs=tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        random_seed=tuning.random_seed,
    )


def _s3_input(sdk: Any, name: str, uri: Any, local_path: str) -> Any:
    return sdk.ProcessingInput(
        input_name=name,
        s3_input=sdk.ProcessingS3Input(
            s3_uri=uri,
            local_path=local_path,
            s3_data_type="S3Prefix",
            s3_input_mode="File",
        ),
    )


def load_sdk_for(config: Config) -> Any:
    from pipelines.sdk import load_sdk

    return load_sdk(config.aws.region)


def build_definition(config: Config, session: Any | None = None) -> dict[str, Any]:
    """The pipeline definition for ``config`` as a dict (what SageMaker stores).

    Raises:
        InvalidDefinition: a step's request would be refused by SageMaker's API
            (checked against botocore's service model, see ``pipelines.validation``).
    """
    from pipelines.validation import check_definition

    with build_environment(config):
        session = session or make_session(config)
        with warnings.catch_warnings():
            # "Running within a PipelineSession, there will be No Wait ...": that is
            # the point
            warnings.simplefilter("ignore", UserWarning)
            definition = json.loads(get_pipeline(config, session).definition())
    _complete_tuning_steps(definition, config)
    check_definition(definition)
    return definition


# The tuning step's ResourceLimits members set by the pipeline parameters of the same
# names
TUNING_LIMITS = ("MaxNumberOfTrainingJobs", "MaxParallelTrainingJobs")


def _complete_tuning_steps(definition: dict[str, Any], config: Config) -> None:
    """Give a tuning step what SDK 3.27's tuner leaves out of its request.

    - Its job limits become the pipeline parameters of the same names: the SDK
      declares them ``int | PipelineVariable``, but its ResourceLimits shape takes only
      integers, so the tuner is built with the defaults and the references go in here.
    - Its training jobs get the Train step's network and encryption settings (VPC,
      network isolation, inter-container encryption, the volume key) and spot
      checkpoints: the tuner copies none of them from the ModelTrainer.

    Done on the JSON, so the same document goes to SageMaker and the local runner.
    """
    declared = {p["Name"] for p in definition.get("Parameters", [])}
    security, sm = config.security, config.sagemaker
    for step in definition.get("Steps", []):
        if step.get("Type") != "Tuning":
            continue
        arguments = step["Arguments"]
        limits = arguments["HyperParameterTuningJobConfig"]["ResourceLimits"]
        for name in TUNING_LIMITS:
            if name in declared:
                limits[name] = {"Get": f"Parameters.{name}"}
        job = arguments["TrainingJobDefinition"]
        if security.subnets:
            job["VpcConfig"] = {
                "SecurityGroupIds": list(security.security_group_ids),
                "Subnets": list(security.subnets),
            }
        job["EnableNetworkIsolation"] = security.network_isolation
        job["EnableInterContainerTrafficEncryption"] = (
            security.encrypt_inter_container_traffic
        )
        if security.volume_kms_key_id:
            job["ResourceConfig"]["VolumeKmsKeyId"] = security.volume_kms_key_id
        if sm.spot_training:
            job["CheckpointConfig"] = {
                "S3Uri": f"{config.artifact_root}/checkpoints/train",
                "LocalPath": "/opt/ml/checkpoints",
            }


def build_environment(config: Config) -> contextlib.AbstractContextManager[None]:
    """Where the SDK builds a definition: the caller's AWS session for an AWS
    environment, none of the caller's AWS settings for ``local`` and ``test``.
    """
    from pipelines.sdk import without_callers_aws

    if config.is_aws:
        return contextlib.nullcontext()
    return without_callers_aws(config.aws.region)
