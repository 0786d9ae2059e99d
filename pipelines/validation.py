"""Check a pipeline definition against SageMaker's own API model before it is sent.

Each step's ``Arguments`` has the shape of an API request (CreateProcessingJob for a
Processing step, CreateTrainingJob for a Training step, CreateHyperParameterTuningJob
for a Tuning step ...). botocore ships the
SageMaker service model those requests are defined by, so every step is checked the way
the service would check the request it makes from it:

- references (``{"Get": ...}``, ``Std:Join``, ``Std:JsonGet``) are replaced by a
  placeholder of the type the API expects at that place; a pipeline parameter must be of
  a type that fits (a String parameter where an integer goes is an error);
- the names the service generates itself (ProcessingJobName, TrainingJobName,
  HyperParameterTuningJobName, ModelName) are filled in;
- then botocore's validator reports unknown keys, missing required members, wrong types
  and out-of-range values, and enumerations are checked against the model's values.

botocore's validator checks only the model's minimums (botocore 1.44: no maximum
length, list or map size, or pattern), so the service limits are checked here too, on
the step's own values: every literal string against its shape's ``max`` and
``pattern``, every list and map against its ``max`` size, every integer against its
``max``, and a ``Std:Join`` of literals and the execution id at its longest. The whole
definition must fit CreatePipeline's PipelineDefinition.

Condition and Fail steps, parameters, caching and retry policies have no API request of
their own; their structure is checked here directly.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from functools import cache
from typing import Any

from stack.config import ISO8601_DURATION

# Step type -> (API operation, the members SageMaker Pipelines fills in itself)
STEP_OPERATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "Processing": ("CreateProcessingJob", {"ProcessingJobName": "pipelines-job"}),
    "Training": ("CreateTrainingJob", {"TrainingJobName": "pipelines-job"}),
    "Tuning": (
        "CreateHyperParameterTuningJob",
        {"HyperParameterTuningJobName": "pipelines-job"},
    ),
    "RegisterModel": ("CreateModelPackage", {}),
    "Model": ("CreateModel", {"ModelName": "pipelines-model"}),
    "EndpointConfig": ("CreateEndpointConfig", {}),
    "Endpoint": ("CreateEndpoint", {}),
}
_PARAMETER_FITS = {
    "String": {"string"},
    "Integer": {"integer", "long"},
    "Float": {"float", "double"},
    "Boolean": {"boolean"},
}
_REFERENCE_KEYS = {"Get", "Std:Join", "Std:JsonGet"}
_CONDITION_TYPES = {
    "Equals",
    "GreaterThan",
    "GreaterThanOrEqualTo",
    "LessThan",
    "LessThanOrEqualTo",
    "In",
    "Not",
    "Or",
}
_STEP_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
_RETRY_EXCEPTIONS = {
    "Step.SERVICE_FAULT",
    "Step.THROTTLING",
    "SageMaker.JOB_INTERNAL_ERROR",
    "SageMaker.CAPACITY_ERROR",
    "SageMaker.RESOURCE_LIMIT",
}


# CreatePipeline's PipelineDefinition maximum, used only if botocore's model has none
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreatePipeline.html:
# "Maximum length of 1048576").
_DEFINITION_MAX = 1_048_576
# The longest value of {"Get": "Execution.PipelineExecutionId"}: execution ids are 12
# lowercase letters and digits (".../execution/p4jn9xou8a8s" in the EventBridge event
# examples of the SageMaker developer guide).
_EXECUTION_ID = "a" * 12
_NUMBER_TYPES = {"integer", "long", "float", "double"}


class InvalidDefinition(Exception):
    """The definition would be refused by SageMaker; ``problems`` says where and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"the pipeline definition is invalid: {len(problems)} problem(s): "
            + "; ".join(problems)
        )
        self.problems = problems


def check_definition(definition: dict[str, Any]) -> None:
    """Raise InvalidDefinition listing every problem found (nothing if it is valid)."""
    problems = definition_problems(definition)
    if problems:
        raise InvalidDefinition(problems)


def definition_problems(definition: dict[str, Any]) -> list[str]:
    """Every problem SageMaker would find in ``definition``, each naming its step."""
    problems: list[str] = _size_problems(definition)
    if definition.get("Version") != "2020-12-01":
        problems.append(f"Version {definition.get('Version')!r} is not 2020-12-01")
    parameters = _parameter_types(definition, problems)
    names: list[str] = []
    for step in _all_steps(definition.get("Steps", [])):
        name = str(step.get("Name"))
        names.append(name)
        problems.extend(f"step {name}: {p}" for p in _step_problems(step, parameters))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"step names are not unique: {', '.join(duplicates)}")
    return problems


def _parameter_types(definition: dict[str, Any], problems: list[str]) -> dict[str, str]:
    types = {}
    for parameter in definition.get("Parameters", []):
        name, kind = parameter.get("Name"), parameter.get("Type")
        if kind not in _PARAMETER_FITS:
            problems.append(f"parameter {name}: unknown type {kind!r}")
            continue
        types[str(name)] = str(kind)
    return types


def _all_steps(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for step in steps:
        yield step
        if step.get("Type") == "Condition":
            arguments = step.get("Arguments", {})
            yield from _all_steps(arguments.get("IfSteps", []))
            yield from _all_steps(arguments.get("ElseSteps", []))


def _step_problems(step: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    problems = []
    kind = step.get("Type")
    if not _STEP_NAME.fullmatch(str(step.get("Name", ""))):
        problems.append("the name must be 1-64 letters, digits, - or _")
    problems.extend(_policy_problems(step))
    arguments = step.get("Arguments", {})
    if kind == "Condition":
        problems.extend(_condition_problems(arguments.get("Conditions"), parameters))
    elif kind == "Fail":
        if set(arguments) - {"ErrorMessage"}:
            problems.append(f"unknown Fail arguments {sorted(set(arguments))}")
    elif kind in STEP_OPERATIONS:
        problems.extend(request_problems(kind, arguments, parameters))
        problems.extend(limit_problems(kind, arguments))
    else:
        problems.append(f"step type {kind!r} is not one this project validates")
    return problems


def request_problems(
    step_type: str, arguments: dict[str, Any], parameters: dict[str, str]
) -> list[str]:
    """What SageMaker's API model finds wrong with one step's request."""
    from botocore.validate import ParamValidator

    operation, generated = STEP_OPERATIONS[step_type]
    shape = _service_model().operation_model(operation).input_shape
    problems: list[str] = []
    request = {**generated, **_placeholders(arguments, shape, "", parameters, problems)}
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        problems.extend(
            line.strip()
            for line in report.generate_report().splitlines()
            if line.strip()
        )
    _check_enums(request, shape, "", problems)
    return [f"{operation}: {p}" for p in problems]


def _size_problems(definition: dict[str, Any]) -> list[str]:
    """The definition as deploy sends it (``json.dumps``) against CreatePipeline's."""
    shape = _service_model().operation_model("CreatePipeline").input_shape
    limit = int(
        shape.members["PipelineDefinition"].metadata.get("max", _DEFINITION_MAX)
    )
    size = len(json.dumps(definition))
    if size <= limit:
        return []
    return [
        f"the definition is {size:,} characters; SageMaker allows at most {limit:,}"
        " (CreatePipeline PipelineDefinition)"
    ]


def limit_problems(step_type: str, arguments: dict[str, Any]) -> list[str]:
    """The service limits of one step's request that botocore's validator leaves out.

    Only what is known before the run is checked: literals, a ``Std:Join`` of
    literals and the execution id at its longest, and the literal part of any other
    ``Std:Join``. A job name the definition leaves out is not checked: SageMaker makes
    it and cuts the step name short (observed ARNs read
    ``pipelines-<execution id>-<step name, at most 20 characters>-<token>``).
    """
    operation, _ = STEP_OPERATIONS[step_type]
    shape = _service_model().operation_model(operation).input_shape
    return [
        f"{problem} ({operation} {name})"
        for problem, name in _limits(arguments, shape, "")
    ]


def _limits(node: Any, shape: Any, where: str) -> Iterator[tuple[str, str]]:
    """(problem, shape name) for each limit of ``shape`` that ``node`` exceeds."""
    if shape is None:
        return  # an unknown key: botocore reports it
    kind = shape.type_name
    if _is_reference(node):
        if kind == "string":
            yield from _reference_limits(node, shape, where)
    elif isinstance(node, dict) and kind == "structure":
        for key, value in node.items():
            yield from _limits(value, shape.members.get(key), _path(where, key))
    elif isinstance(node, dict) and kind == "map":
        yield from _size_limit(node, shape, where)
        for key, value in node.items():
            label = _label(str(key))
            yield from _string_limits(str(key), shape.key, f"{where} key {label}")
            yield from _limits(value, shape.value, f"{where} value of {label}")
    elif isinstance(node, list) and kind == "list":
        yield from _size_limit(node, shape, where)
        for i, item in enumerate(node):
            yield from _limits(item, shape.member, f"{where}[{i}]")
    elif isinstance(node, str) and kind == "string":
        yield from _string_limits(node, shape, where)
    elif _is_number(node) and kind in _NUMBER_TYPES:
        yield from _number_limit(node, shape, where)


def _number_limit(value: float, shape: Any, where: str) -> Iterator[tuple[str, str]]:
    limit = shape.metadata.get("max")
    if limit is not None and value > limit:
        yield f"{where} is {value:,}; SageMaker allows at most {limit:,}", shape.name


def _size_limit(
    node: dict[str, Any] | list[Any], shape: Any, where: str
) -> Iterator[tuple[str, str]]:
    limit = shape.metadata.get("max")
    if limit is not None and len(node) > limit:
        yield (
            f"{where} has {len(node):,} entries; SageMaker allows at most {limit:,}",
            shape.name,
        )


def _string_limits(
    value: str, shape: Any, where: str, joined: bool = False
) -> Iterator[tuple[str, str]]:
    """Length first: a value over the maximum is not also matched (nor backtracked)."""
    limit = shape.metadata.get("max")
    longest = " at its longest" if joined else ""
    if limit is not None and len(value) > limit:
        yield (
            f"{where} is {len(value):,} characters{longest}; "
            f"SageMaker allows at most {limit:,}",
            shape.name,
        )
        return
    pattern = _pattern(shape.metadata.get("pattern"))
    if pattern is not None and not pattern.fullmatch(value):
        yield (
            f"{where} {_label(value)!r} does not match the pattern {pattern.pattern}",
            shape.name,
        )


@cache
def _pattern(pattern: str | None) -> re.Pattern[str] | None:
    """The model's (Java) pattern in Python's re, or None where re cannot read it."""
    if pattern is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set" FutureWarnings
        try:
            return re.compile(pattern)
        except re.error:  # \p{L} and other Java-only syntax
            return None


def _reference_limits(
    reference: dict[str, Any], shape: Any, where: str
) -> Iterator[tuple[str, str]]:
    """A reference's longest value if it is known, else its known part's length."""
    longest = _expand(reference, None)
    if longest is not None:
        yield from _string_limits(longest, shape, where, joined=True)
        return
    shortest = _expand(reference, "") or ""
    limit = shape.metadata.get("max")
    if limit is not None and len(shortest) > limit:
        yield (
            f"{where} is at least {len(shortest):,} characters; "
            f"SageMaker allows at most {limit:,}",
            shape.name,
        )


def _expand(node: Any, unknown: str | None) -> str | None:
    """``node`` at its longest; a part known only at run time becomes ``unknown``."""
    if isinstance(node, str):
        return node
    if isinstance(node, bool):
        return "true" if node else "false"
    if _is_number(node):
        return str(node)
    if node == {"Get": "Execution.PipelineExecutionId"}:
        return _EXECUTION_ID
    join = node.get("Std:Join") if isinstance(node, dict) else None
    if not isinstance(join, dict) or not isinstance(join.get("Values"), list):
        return unknown
    parts = [_expand(value, unknown) for value in join["Values"]]
    if any(part is None for part in parts):
        return None
    return str(join.get("On", "")).join(part or "" for part in parts)


def _is_reference(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and set(node) <= _REFERENCE_KEYS


def _is_number(node: Any) -> bool:
    return isinstance(node, int | float) and not isinstance(node, bool)


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _label(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@cache
def _service_model() -> Any:
    """botocore's SageMaker model, read from botocore's data files (no session: the
    caller's AWS profile has no say in it).
    """
    from botocore.loaders import create_loader
    from botocore.model import ServiceModel

    data = create_loader().load_service_model("sagemaker", "service-2")
    return ServiceModel(data, service_name="sagemaker")


def _placeholders(
    node: Any, shape: Any, where: str, parameters: dict[str, str], problems: list[str]
) -> Any:
    """``node`` with every reference replaced by a value of the type ``shape`` wants."""
    if _is_reference(node):
        return _placeholder(node, shape, where, parameters, problems)
    if shape is None:
        return node  # an unknown key: botocore reports it
    if isinstance(node, dict) and shape.type_name == "structure":
        return {
            key: _placeholders(
                value,
                shape.members.get(key),
                f"{where}.{key}".lstrip("."),
                parameters,
                problems,
            )
            for key, value in node.items()
        }
    if isinstance(node, dict) and shape.type_name == "map":
        return {
            key: _placeholders(
                value, shape.value, f"{where}.{key}", parameters, problems
            )
            for key, value in node.items()
        }
    if isinstance(node, list) and shape.type_name == "list":
        return [
            _placeholders(item, shape.member, f"{where}[{i}]", parameters, problems)
            for i, item in enumerate(node)
        ]
    return node


def _placeholder(
    reference: dict[str, Any],
    shape: Any,
    where: str,
    parameters: dict[str, str],
    problems: list[str],
) -> Any:
    kind = shape.type_name if shape is not None else "string"
    get = reference.get("Get")
    if isinstance(get, str) and get.startswith("Parameters."):
        name = get.removeprefix("Parameters.")
        declared = parameters.get(name)
        if declared is None:
            problems.append(f"{where}: refers to undeclared parameter {name}")
        elif kind not in _PARAMETER_FITS[declared]:
            problems.append(
                f"{where}: parameter {name} is a {declared}, but the API wants {kind}"
            )
    elif "Std:Join" in reference and kind != "string":
        problems.append(f"{where}: Std:Join makes a string, but the API wants {kind}")
    if kind == "string":
        enum = getattr(shape, "enum", None)
        if enum:
            return str(enum[0])
        return "r" * max(1, int(shape.metadata.get("min", 1)) if shape else 1)
    if kind in ("integer", "long"):
        return max(1, int(shape.metadata.get("min", 1)))
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return True
    problems.append(f"{where}: a reference cannot stand for a whole {kind}")
    return None


def _check_enums(node: Any, shape: Any, where: str, problems: list[str]) -> None:
    if shape is None:
        return
    enum = getattr(shape, "enum", None)
    if isinstance(node, str) and enum:
        if node not in enum:
            problems.append(
                f"{where}: {node!r} is not one of {', '.join(enum[:8])}"
                + (" ..." if len(enum) > 8 else "")
            )
    elif isinstance(node, dict) and shape.type_name == "structure":
        for key, value in node.items():
            _check_enums(
                value, shape.members.get(key), f"{where}.{key}".lstrip("."), problems
            )
    elif isinstance(node, list) and shape.type_name == "list":
        for i, item in enumerate(node):
            _check_enums(item, shape.member, f"{where}[{i}]", problems)


def _policy_problems(step: dict[str, Any]) -> list[str]:
    problems = []
    cache_config = step.get("CacheConfig")
    if cache_config is not None:
        if set(cache_config) - {"Enabled", "ExpireAfter"}:
            problems.append(f"CacheConfig has unknown keys {sorted(cache_config)}")
        if not isinstance(cache_config.get("Enabled"), bool):
            problems.append("CacheConfig.Enabled must be true or false")
        expire = cache_config.get("ExpireAfter")
        if expire is not None and not ISO8601_DURATION.fullmatch(str(expire).upper()):
            problems.append(
                f"CacheConfig.ExpireAfter {expire!r} is not an ISO 8601 duration"
            )
    for i, policy in enumerate(step.get("RetryPolicies", [])):
        unknown = set(policy.get("ExceptionType", [])) - _RETRY_EXCEPTIONS
        if unknown:
            problems.append(
                f"RetryPolicies[{i}]: unknown exception types {sorted(unknown)}"
            )
        if ("MaxAttempts" in policy) == ("ExpireAfterMin" in policy):
            problems.append(f"RetryPolicies[{i}]: give MaxAttempts or ExpireAfterMin")
        attempts = policy.get("MaxAttempts", 1)
        if not isinstance(attempts, int) or not 1 <= attempts <= 20:
            problems.append(f"RetryPolicies[{i}]: MaxAttempts must be 1..20")
    return problems


def _condition_problems(conditions: Any, parameters: dict[str, str]) -> list[str]:
    if not isinstance(conditions, list) or not conditions:
        return ["a Condition step needs a non-empty Conditions list"]
    problems = []
    for i, condition in enumerate(conditions):
        kind = condition.get("Type") if isinstance(condition, dict) else None
        if kind not in _CONDITION_TYPES:
            problems.append(f"Conditions[{i}]: unknown condition type {kind!r}")
            continue
        if kind == "Not":
            problems.extend(
                _condition_problems([condition.get("Expression")], parameters)
            )
        elif kind == "Or":
            problems.extend(
                _condition_problems(condition.get("Conditions"), parameters)
            )
        elif kind == "In":
            if "QueryValue" not in condition or not isinstance(
                condition.get("Values"), list
            ):
                problems.append(f"Conditions[{i}]: In needs QueryValue and Values")
        elif "LeftValue" not in condition or "RightValue" not in condition:
            problems.append(f"Conditions[{i}]: {kind} needs LeftValue and RightValue")
        for side in ("LeftValue", "RightValue", "QueryValue"):
            value = condition.get(side)
            get = str(value.get("Get", "")) if isinstance(value, dict) else ""
            name = get.removeprefix("Parameters.")
            if get.startswith("Parameters.") and name not in parameters:
                problems.append(f"Conditions[{i}].{side}: undeclared {get}")
    return problems
