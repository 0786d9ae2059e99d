"""The training pipeline: Preflight → Extract → Train (or Tune) → Baseline, Evaluate →
Gate → CheckAuc → Register → Track → CheckApproval → Deploy → CheckWriteBack →
WriteBack.

The processing steps are declared next to their code (``SPEC`` in each step's module,
``pipelines.spec``); this module puts them in order with the steps that are not
processing jobs (training or tuning, registration, deployment and the conditions)
through ``pipelines.builder``. ``build_definition(config)`` is the JSON that
``--upsert`` sends to SageMaker and that the local runner executes. The code runs
inside our image as modules, so nothing is uploaded while building and the build
makes no AWS call. Everything environment-specific comes from ``config``.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from monitoring import baseline as baseline_step
from pipelines.builder import PipelineBuilder, make_session
from pipelines.sdk import load_sdk
from pipelines.spec import StepOutput
from pipelines.step_names import (
    AUC_TOO_LOW,
    CHECK_APPROVAL,
    CHECK_AUC,
    CHECK_WRITEBACK,
    CREATE_MODEL,
    DEPLOY,
    ENDPOINT_CONFIG,
    EXTRACT,
    GATE,
    GATE_REPORT,
    REGISTER,
    TRAIN,
    TUNE,
)
from pipelines.validation import check_definition
from processing import evaluate as evaluate_step
from processing import extract as extract_step
from processing import gate as gate_step
from processing import preflight as preflight_step
from processing import tracking as track_step
from snowflake.sagemaker_predictions import __main__ as writeback_step
from stack.config import Config, TuningConfig
from stack.endpoints import data_capture_config
from stack.resources import definition_environment
from training.distributed import (
    DEFAULT_INSTANCE_COUNT as DEFAULT_TRAINING_INSTANCE_COUNT,
)
from training.hyperparameters import DEFAULTS, HYPERPARAMETER_TYPES
from training.metric_lines import METRIC_DEFINITIONS, OBJECTIVE_METRIC

# Where CheckAuc, Register and the FailStep read the gate's report
AUC_PATH = "binary_classification_metrics.auc.value"
GATE_DECISION_PATH, GATE_RULE_PATH = "gate.decision", "gate.rule"
TRAINING_SPLITS = ("train", "validation")
# The processing steps, by name, in the order they are built
# The hyperparameters that are pipeline parameters too (unless a tuning step searches
# them): their parameter's name and type
TUNABLE_PARAMETERS: dict[str, tuple[str, type[int] | type[float]]] = {
    "max_depth": ("MaxDepth", int),
    "eta": ("LearningRate", float),
    "num_round": ("NumRound", int),
}
PROCESSING_SPECS = {
    spec.name: spec
    for spec in (
        preflight_step.SPEC,
        extract_step.SPEC,
        baseline_step.SPEC,
        evaluate_step.SPEC,
        gate_step.SPEC,
        track_step.SPEC,
        writeback_step.SPEC,
    )
}


def parameters(sdk: Any, config: Config) -> list[Any]:
    """The pipeline's parameters, with the configuration's values as defaults."""
    sm = config.sagemaker
    declared = [
        sdk.ParameterString(
            "AsOfDate", default_value=config.features.as_of.isoformat()
        ),
        sdk.ParameterInteger(
            "LabelWindowDays", default_value=config.features.label_window_days
        ),
        sdk.ParameterInteger(
            "ProcessingInstanceCount", default_value=sm.processing_instance_count
        ),
        sdk.ParameterFloat(
            "AucThreshold", default_value=config.evaluation.auc_threshold
        ),
        sdk.ParameterString(
            "ModelApprovalStatus", default_value=sm.model_approval_status
        ),
        # The Snowflake point in time the Extract reads (Time Travel): an ISO
        # timestamp, or "latest" for the time the Extract starts. A parameter, not
        # the execution's start time, so that step caching still keys on what was read.
        sdk.ParameterString("DataVersion", default_value="latest"),
        sdk.ParameterFloat(
            "ChampionTolerance", default_value=config.evaluation.champion_tolerance
        ),
        # The commit of the code that runs: `pipelines.run` passes it when it starts
        # an execution. A parameter, so it changes Train's cache key only when the
        # code does.
        sdk.ParameterString("GitCommit", default_value="unknown"),
        # Score the active entities into Snowflake's PREDICTIONS once the endpoint
        # serves
        sdk.ParameterBoolean("WriteBack", default_value=config.writeback.in_pipeline),
        # Hosts of the Train step: XGBoost's distributed training over shares of the
        # data, the first host writing the model (training.distributed)
        sdk.ParameterInteger(
            "TrainingInstanceCount", default_value=DEFAULT_TRAINING_INSTANCE_COUNT
        ),
    ]
    hyperparameters = _hyperparameters(config)
    tuning = _tuning(config)
    # the hyperparameters worth setting per execution are pipeline parameters too,
    # unless a tuning step searches them
    declared += [
        (sdk.ParameterInteger if kind is int else sdk.ParameterFloat)(
            parameter, default_value=kind(hyperparameters[name])
        )
        for name, (parameter, kind) in TUNABLE_PARAMETERS.items()
        if not (tuning and name in tuning.ranges)
    ]
    if tuning:
        # bound to the tuning step's ResourceLimits by build_definition (SDK 3.27's
        # ResourceLimits refuses pipeline variables)
        declared += [
            sdk.ParameterInteger(
                "MaxNumberOfTrainingJobs", default_value=tuning.max_jobs
            ),
            sdk.ParameterInteger(
                "MaxParallelTrainingJobs", default_value=tuning.max_parallel_jobs
            ),
        ]
    return declared


def get_pipeline(config: Config, session: Any) -> Any:
    """Build the pipeline for ``config`` on ``session`` (a PipelineSession)."""
    sdk = load_sdk(config.aws.region)
    build = PipelineBuilder(config, session, parameters(sdk, config))
    preflight = build.processing(preflight_step.SPEC)
    extract = build.processing(extract_step.SPEC)
    train = _training_step(build)
    baseline = build.processing(baseline_step.SPEC)
    evaluate = build.processing(evaluate_step.SPEC)
    gate = build.processing(gate_step.SPEC)
    register = _register_step(build)
    # the registered package's ARN onto the execution's MLflow run
    track = [build.processing(track_step.SPEC)] if config.jobs_tracking_uri else []
    deploy = _deploy_steps(build)
    writeback = build.processing(writeback_step.SPEC)
    p_writeback = build.parameters["WriteBack"]
    p_approval = build.parameters["ModelApprovalStatus"]
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
        if_steps=[*deploy, check_writeback],
        else_steps=[],
    )
    too_low = sdk.FailStep(
        name=AUC_TOO_LOW,
        error_message=sdk.Join(
            on=" ",
            values=[
                "The model was not registered. Decided by the",
                _from_gate(build, GATE_RULE_PATH),
            ],
        ),
    )
    check_auc = sdk.ConditionStep(
        name=CHECK_AUC,
        conditions=[
            # the absolute rule, checked here too, and the gate's whole decision
            sdk.ConditionGreaterThanOrEqualTo(
                left=_from_gate(build, AUC_PATH),
                right=build.parameters["AucThreshold"],
            ),
            sdk.ConditionEquals(
                left=_from_gate(build, GATE_DECISION_PATH), right="register"
            ),
        ],
        if_steps=[register, *track, check_approval],
        else_steps=[too_low],
    )
    return build.pipeline(
        config.sagemaker.pipeline_name,
        [preflight, extract, train, baseline, evaluate, gate, check_auc],
    )


def _from_gate(build: PipelineBuilder, path: str) -> Any:
    return build.report_value(GATE, GATE_REPORT, path)


def _hyperparameters(config: Config) -> dict[str, Any]:
    return {
        **DEFAULTS,
        "feature_set": config.features.feature_set,
        **config.training.hyperparameters,
    }


def _tuning(config: Config) -> TuningConfig | None:
    tuning = config.training.tuning
    return tuning if tuning.enabled else None


def _training_step(build: PipelineBuilder) -> Any:
    """Train, or Tune when training.tuning is enabled; sets ``build.model`` to the
    model archive the steps after it read."""
    sdk, config = build.sdk, build.config
    sm, security = config.sagemaker, config.security
    tuning = _tuning(config)
    tuning_output = f"{config.artifact_root}/tuning"
    # No execution id in the environment: SageMaker's cache key includes it, so it
    # would defeat step caching (training reads it from TRAINING_JOB_NAME instead).
    environment: dict[str, Any] = {"GIT_COMMIT": build.parameters["GitCommit"]}
    tracking_uri = config.jobs_tracking_uri
    if tracking_uri:
        environment["MLFLOW_TRACKING_URI"] = tracking_uri
        environment["MLFLOW_EXPERIMENT_NAME"] = (
            config.mlflow.experiment or sm.pipeline_name
        )
    if tracking_uri and not config.mlflow.tracking_uri:
        # the local store keeps run artifacts beside it, not in a job's folder
        environment["MLFLOW_ARTIFACT_LOCATION"] = config.mlflow_artifact_location
    tuned = {
        name: build.parameters[parameter].to_string()
        for name, (parameter, _) in TUNABLE_PARAMETERS.items()
        if parameter in build.parameters
    }
    trainer = sdk.ModelTrainer(
        training_image=sm.image_uri,
        role=build.role,
        sagemaker_session=build.session,
        base_job_name=f"{sm.pipeline_name}-train",
        compute=sdk.Compute(
            instance_type=sm.training_instance_type,
            instance_count=build.parameters["TrainingInstanceCount"],
            volume_kms_key_id=security.volume_kms_key_id,
            enable_managed_spot_training=sm.spot_training or None,
        ),
        networking=build.networking(),
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
        hyperparameters={**_hyperparameters(config), **tuned},
        environment=environment,
        output_data_config=sdk.OutputDataConfig(
            # a tuning job's trials under one fixed prefix (their names are unique):
            # the best model's URI must not name the execution, or a cached Tune
            # step would hand on a model under this execution's prefix, not its own
            s3_output_path=tuning_output if tuning else build.under("model"),
            kms_key_id=security.output_kms_key_id,
        ),
    )
    splits = build.steps[EXTRACT].properties.ProcessingOutputConfig.Outputs
    channels = [
        sdk.InputData(channel_name=split, data_source=splits[split].S3Output.S3Uri)
        for split in TRAINING_SPLITS
    ]
    if tuning:
        step = sdk.TuningStep(
            name=TUNE,
            **build.policies(cached=True),
            step_args=_tuner(sdk, trainer, tuning).tune(inputs=channels),
        )
        # the best training job's model (get_top_model_s3_uri(0, ...): the service
        # lists the jobs best first)
        build.model = sdk.Join(
            on="/",
            values=[
                tuning_output,
                step.properties.TrainingJobSummaries[0].TrainingJobName,
                "output",
                "model.tar.gz",
            ],
        )
    else:
        step = sdk.TrainingStep(
            name=TRAIN,
            **build.policies(cached=True),
            step_args=trainer.train(input_data_config=channels),
        )
        build.model = step.properties.ModelArtifacts.S3ModelArtifacts
    return build.add(step)


def _register_step(build: PipelineBuilder) -> Any:
    """The model package, with its metrics, drift baselines and lineage."""
    sdk, config = build.sdk, build.config
    sm = config.sagemaker
    gate_prefix = build.value(StepOutput(GATE, "gate"))
    baselines = build.value(StepOutput(baseline_step.SPEC.name, "baseline"))

    def baseline_file(name: str) -> Any:
        return sdk.MetricsSource(
            content_type="application/json",
            s3_uri=sdk.Join(on="/", values=[baselines, name]),
        )

    def from_gate(path: str) -> Any:
        return _from_gate(build, path)

    step = sdk.ModelStep(
        name=REGISTER,
        step_args=sdk.ModelBuilder(
            s3_model_data_url=build.model,
            image_uri=sm.image_uri,
            sagemaker_session=build.session,
            role_arn=build.role,
            dependencies={},  # the code is in the image: nothing to upload
        ).register(
            model_package_group_name=sm.model_package_group,
            content_types=["text/csv", "application/json"],
            response_types=["application/json", "text/csv"],
            inference_instances=[sm.endpoint_instance_type],
            transform_instances=[sm.endpoint_instance_type],
            approval_status=build.parameters["ModelApprovalStatus"],
            model_metrics=sdk.ModelMetrics(
                model_statistics=sdk.MetricsSource(
                    content_type="application/json",
                    s3_uri=sdk.Join(
                        on="/", values=[gate_prefix, evaluate_step.REPORT_FILE]
                    ),
                )
            ),
            drift_check_baselines=sdk.DriftCheckBaselines(
                model_data_statistics=baseline_file(baseline_step.STATISTICS_FILE),
                model_data_constraints=baseline_file(baseline_step.CONSTRAINTS_FILE),
            ),
            customer_metadata_properties={
                "pipeline_execution_id": build.execution_id,
                "as_of_date": build.parameters["AsOfDate"],
                "label_window_days": build.parameters["LabelWindowDays"].to_string(),
                "data_version": from_gate("data_window.data_version"),
                "feature_set": config.features.feature_set,
                "git_commit": build.parameters["GitCommit"],
                # this execution's run (gate, package ARN) and the training run
                "mlflow_run_id": from_gate("tracking.run_id"),
                "mlflow_training_run_id": from_gate("tracking.training_run_id"),
                "test_auc": sdk.Join(on="", values=[from_gate(AUC_PATH)]),
                # what SCORE is: the calibration the artifact carries, in words
                "score": from_gate("calibration.score"),
                "report_uri": sdk.Join(on="/", values=[gate_prefix, "report.html"]),
            },
        ),
    )
    return build.add(step)


def _deploy_steps(build: PipelineBuilder) -> list[Any]:
    """CreateModel (from the registered package) → EndpointConfig → Endpoint."""
    sdk, config, session = build.sdk, build.config, build.session
    sm = config.sagemaker
    name = sdk.Join(on="-", values=[sm.endpoint_name, build.execution_id])
    holder = _ModelHolder(session)
    session.init_model_step_arguments(holder)
    session.create_model(
        name=name,
        role=build.role,
        container_defs=[
            {"ModelPackageName": build.steps[REGISTER].properties.ModelPackageArn}
        ],
    )
    model_args = session.context
    session.context = None
    create_model = sdk.ModelStep(name=CREATE_MODEL, step_args=model_args)
    endpoint_config = sdk.EndpointConfigStep(
        name=ENDPOINT_CONFIG,
        step_args=session.create_endpoint_config(
            name=sdk.Join(on="-", values=[sm.endpoint_name, build.execution_id]),
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
    return [build.add(s) for s in (create_model, endpoint_config, deploy)]


class _ModelHolder:
    """What ``PipelineSession.init_model_step_arguments`` expects to hold a model's
    session.

    SDK 3.27 captures a CreateModel request for a ModelStep only through a model object;
    our model is the registered package, so this stands in for one.
    """

    def __init__(self, session: Any) -> None:
        self.sagemaker_session = session


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


def build_definition(config: Config, session: Any | None = None) -> dict[str, Any]:
    """The pipeline definition for ``config`` as a dict (what SageMaker stores).

    Raises:
        InvalidDefinition: a step's request would be refused by SageMaker's API
            (checked against botocore's service model, see ``pipelines.validation``).
    """
    with definition_environment(config):
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
