"""Evaluate the expressions of a pipeline definition: ``Get``, ``Std:Join``,
``Std:JsonGet``.

References take the forms SageMaker documents:
  {"Get": "Parameters.AucThreshold"}
  {"Get": "Execution.PipelineExecutionId"}
  {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
  {"Get": "Steps.Extract.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
  {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}   (inside Std:JsonGet)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(?:'([^']*)'|\"([^\"]*)\"|(\d+))\]")


class ExpressionError(Exception):
    """A reference names something that does not exist (yet)."""


@dataclass
class EvaluationContext:
    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    # Per step: its properties, shaped like the matching Describe* response.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per step: property file name -> parsed JSON.
    property_files: dict[str, dict[str, Any]] = field(default_factory=dict)


def references(value: Any) -> set[str]:
    """Names of the steps an expression refers to (used to order steps)."""
    found: set[str] = set()
    if isinstance(value, dict):
        get = value.get("Get")
        if isinstance(get, str) and get.startswith("Steps."):
            found.add(cast(str, _path_tokens(get)[1]))
        for item in value.values():
            found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def resolve(value: Any, context: EvaluationContext) -> Any:
    """Replace every expression inside ``value`` by its value."""
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Get"}:
        return _get(value["Get"], context)
    if set(value) == {"Std:Join"}:
        join = value["Std:Join"]
        return str(join["On"]).join(
            _to_text(resolve(v, context)) for v in join["Values"]
        )
    if set(value) == {"Std:JsonGet"}:
        return _json_get(value["Std:JsonGet"], context)
    return {key: resolve(item, context) for key, item in value.items()}


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _path_tokens(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if not match:
            raise ExpressionError(
                f"cannot parse the reference {path!r} at {path[position:]!r}"
            )
        name, single, double, index = match.groups()
        if name is not None:
            tokens.append(name)
        elif index is not None:
            tokens.append(int(index))
        else:
            tokens.append(single if single is not None else double)
        position = match.end()
    return tokens


def _get(path: str, context: EvaluationContext) -> Any:
    tokens = _path_tokens(path)
    root, rest = tokens[0], tokens[1:]
    if root == "Parameters":
        name = rest[0]
        if name not in context.parameters:
            raise ExpressionError(f"unknown parameter {name!r}")
        return context.parameters[cast(str, name)]
    if root == "Execution":
        name = rest[0]
        if name not in context.execution:
            raise ExpressionError(f"unknown execution variable {name!r}")
        return context.execution[cast(str, name)]
    if root == "Steps":
        step = str(rest[0])
        if rest[1:2] == ["PropertyFiles"]:
            return {"step": step, "property_file": rest[2]}
        if step not in context.steps:
            raise ExpressionError(f"step {step!r} has not run, so {path} has no value")
        return _walk(context.steps[step], rest[1:], path)
    raise ExpressionError(f"unsupported reference {path!r}")


def _walk(node: Any, tokens: list[str | int], path: str) -> Any:
    for token in tokens:
        if isinstance(token, int):
            if not isinstance(node, list) or token >= len(node):
                raise ExpressionError(f"{path}: index {token} is out of range")
            node = node[token]
        elif isinstance(node, list):
            # Outputs['train'] selects the element whose *Name field is 'train'
            matches = [item for item in node if token in _names_of(item)]
            if not matches:
                raise ExpressionError(f"{path}: no element named {token!r}")
            node = matches[0]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise ExpressionError(f"{path}: no property {token!r}")
    return node


def _names_of(item: Any) -> set[str]:
    if not isinstance(item, dict):
        return set()
    return {v for k, v in item.items() if k.endswith("Name") and isinstance(v, str)}


def _json_get(spec: dict[str, Any], context: EvaluationContext) -> Any:
    target = spec["PropertyFile"]
    reference = resolve(target, context) if isinstance(target, dict) else target
    if not isinstance(reference, dict) or "step" not in reference:
        raise ExpressionError(
            f"Std:JsonGet needs a property file reference, got {target!r}"
        )
    step, name = reference["step"], reference["property_file"]
    files = context.property_files.get(step, {})
    if name not in files:
        raise ExpressionError(f"property file {step}.{name} was not produced")
    return _walk(
        files[name], _path_tokens(spec["Path"]), f"{step}.{name}:{spec['Path']}"
    )
