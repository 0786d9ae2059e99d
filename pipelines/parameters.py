"""Every pipeline parameter's domain, declared once and checked before any work.

SageMaker checks only a parameter's type when an execution starts; a value out of its
domain (``LearningRate=-1``, ``AsOfDate=notadate``) would start jobs and fail minutes
later with a library's message. So each parameter the pipelines declare has its domain
here, and every starter (``pipelines.run``, ``--start``, the local runner, Retrain)
checks the values with ``check_parameters`` before an execution starts: a one-line
error naming the parameter, exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


class ParameterError(ValueError):
    """A parameter's value is outside its domain; the message names the parameter."""


def _iso_date(text: str) -> None:
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError("is not a date (YYYY-MM-DD)") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError("is not a date (YYYY-MM-DD)")


def _data_version(text: str) -> None:
    if text == "latest":
        return
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "is neither 'latest' nor an ISO 8601 instant (2026-04-01T00:00:00Z)"
        ) from None


def _git_commit(text: str) -> None:
    if text != "unknown" and not re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", text):
        raise ValueError(
            "is neither 'unknown' nor a git commit (7 to 40 hex digits, -dirty after "
            "it for uncommitted changes)"
        )


@dataclass(frozen=True)
class Domain:
    """What values a parameter takes, beyond its SageMaker type."""

    kind: str  # String, Integer, Float or Boolean (the definition's Type)
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False  # the minimum itself is excluded
    choices: tuple[str, ...] = ()
    check: Callable[[str], None] | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside this domain, or None."""
        text = str(value).strip()
        converted: Any = text
        try:
            if self.kind == "Integer":
                converted = int(text)
            elif self.kind == "Float":
                converted = float(text)
            elif self.kind == "Boolean" and text.lower() not in ("true", "false"):
                raise ValueError
        except ValueError:
            return f"is not {'an' if self.kind == 'Integer' else 'a'} {self.kind}"
        if self.minimum is not None and (
            converted < self.minimum
            or (self.above_minimum and converted == self.minimum)
        ):
            bound = "above" if self.above_minimum else "at least"
            return f"must be {bound} {_n(self.minimum)}"
        if self.maximum is not None and converted > self.maximum:
            return f"must be at most {_n(self.maximum)}"
        if self.choices and text not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.check is not None:
            try:
                self.check(text)
            except ValueError as exc:
                return str(exc)
        return None


def _n(number: float) -> str:
    return f"{number:g}"


PARAMETERS: dict[str, Domain] = {
    "AsOfDate": Domain("String", check=_iso_date),
    "LabelWindowDays": Domain("Integer", 1, 3650),
    "ProcessingInstanceCount": Domain("Integer", 1, 100),
    # training.distributed.MAX_INSTANCE_COUNT: every host reads the whole channels
    "TrainingInstanceCount": Domain("Integer", 1, 20),
    "AucThreshold": Domain("Float", 0, 1),
    "ModelApprovalStatus": Domain(
        "String", choices=("Approved", "PendingManualApproval", "Rejected")
    ),
    "DataVersion": Domain("String", check=_data_version),
    "ChampionTolerance": Domain("Float", 0, 1),
    "GitCommit": Domain("String", check=_git_commit),
    "WriteBack": Domain("Boolean"),
    "MaxDepth": Domain("Integer", 1, 30),
    "LearningRate": Domain("Float", 0, 1, above_minimum=True),
    "NumRound": Domain("Integer", 1, 100_000),
    "ForceRetrain": Domain("Boolean"),
    # the tuning step's (training.tuning.enabled); SageMaker's default quotas
    "MaxNumberOfTrainingJobs": Domain("Integer", 1, 500),
    "MaxParallelTrainingJobs": Domain("Integer", 1, 100),
}


def check_parameters(values: Mapping[str, Any]) -> None:
    """Raise ParameterError for the first value outside its parameter's domain."""
    for name, value in values.items():
        domain = PARAMETERS.get(name)
        problem = domain.problem(value) if domain else None
        if problem:
            raise ParameterError(f"parameter {name}={value!r} {problem}")
