"""Step caching for the local runner, keyed the way SageMaker Pipelines keys it.

SageMaker reuses a previous successful run of a step, within the step's
``CacheConfig.ExpireAfter``, when the step's resolved arguments are the same on the
attributes that define its work (SageMaker Developer Guide, "Caching pipeline steps"):

- Processing: ``AppSpecification``, ``Environment``, ``ProcessingInputs``;
- Training: ``AlgorithmSpecification``, ``CheckpointConfig``, ``DebugHookConfig``,
  ``DebugRuleConfigurations``, ``Environment``, ``HyperParameters``,
  ``InputDataConfig``;
- Tuning: ``HyperParameterTuningJobConfig``, ``TrainingJobDefinitions`` and five
  members of ``TrainingJobDefinition`` (``AlgorithmSpecification``,
  ``HyperParameterRanges``, ``InputDataConfig``, ``StaticHyperParameters``,
  ``TuningObjective``).

The Preflight step's fingerprint of the source data is an argument of Extract, so a
change of data is a change of key (``processing.fingerprint``). Outputs are not part of
the key: a cached step hands on the outputs of the run it
reuses, so the steps after it resolve to the same inputs and are cache hits in turn. An
entry is used only while what it points at is still in the object store.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stack.objectstore import ObjectStore, ObjectStoreError, join_uri

KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
    # TrainingJobDefinition counts only by these members (not its Environment or
    # OutputDataConfig)
    "Tuning": (
        "HyperParameterTuningJobConfig",
        "TrainingJobDefinition.AlgorithmSpecification",
        "TrainingJobDefinition.HyperParameterRanges",
        "TrainingJobDefinition.InputDataConfig",
        "TrainingJobDefinition.StaticHyperParameters",
        "TrainingJobDefinition.TuningObjective",
        "TrainingJobDefinitions",
    ),
}
_DURATION_PARTS = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
)


def _member(arguments: dict[str, Any], dotted: str) -> Any:
    """``arguments["A"]["B"]`` for ``"A.B"`` (None where a member is absent)."""
    node: Any = arguments
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration (P30D, PT12H ...); a year counts 365 days, a month 30."""
    match = _DURATION_PARTS.fullmatch(text.upper())
    if not match or text.upper() in ("P", "PT"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration")
    years, months, weeks, days, hours, minutes, seconds = (
        int(part or 0) for part in match.groups()
    )
    return timedelta(
        days=365 * years + 30 * months + 7 * weeks + days,
        hours=hours,
        minutes=minutes,
        seconds=seconds,
    )


@dataclass(frozen=True)
class CachedStep:
    execution_id: str
    ended_at: str
    properties: dict[str, Any]
    property_files: dict[str, Any]


class StepCache:
    """Entries under ``<state>/step-cache/<pipeline>/<step>/<key>.json``."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.root = root
        self.store = store

    @staticmethod
    def applies_to(step: dict[str, Any]) -> bool:
        config = step.get("CacheConfig") or {}
        return bool(config.get("Enabled")) and step.get("Type") in KEY_ATTRIBUTES

    @staticmethod
    def key(
        step: dict[str, Any], arguments: dict[str, Any], image_digest: str = ""
    ) -> str:
        """The hash of the step's type, its resolved cache key attributes and the
        content digest of the image its URI names.

        SageMaker compares the image URI as written, so CD tags every build with its
        version; the local image's URI never changes while its code does, so the
        staged image's digest stands in for the content the URI would name.
        """
        attributes = {
            name: _member(arguments, name) for name in KEY_ATTRIBUTES[step["Type"]]
        }
        text = json.dumps(
            [step["Type"], attributes, image_digest], sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup(
        self,
        pipeline: str,
        step: dict[str, Any],
        key: str,
        now: datetime | None = None,
    ) -> CachedStep | None:
        path = self._path(pipeline, step["Name"], key)
        if not path.exists():
            return None
        entry = CachedStep(**json.loads(path.read_text()))
        expire_after = step["CacheConfig"].get("ExpireAfter")
        if expire_after:
            age = (now or datetime.now(UTC)) - datetime.fromisoformat(entry.ended_at)
            if age > parse_duration(expire_after):
                return None
        return entry if self._outputs_exist(entry.properties) else None

    def save(
        self,
        pipeline: str,
        step: dict[str, Any],
        key: str,
        entry: CachedStep,
    ) -> None:
        path = self._path(pipeline, step["Name"], key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(entry.__dict__, indent=2, default=str))
        partial.replace(path)

    def _path(self, pipeline: str, step_name: str, key: str) -> Path:
        return self.root / pipeline / step_name / f"{key}.json"

    def _outputs_exist(self, properties: dict[str, Any]) -> bool:
        uris = [
            output["S3Output"]["S3Uri"]
            for output in properties.get("ProcessingOutputConfig", {}).get(
                "Outputs", []
            )
        ]
        model = properties.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if model:
            uris.append(model)
        best = properties.get("BestTrainingJob", {}).get("TrainingJobName")
        if best:  # a tuning job's: what the steps after it read
            output = properties["TrainingJobDefinition"]["OutputDataConfig"]
            uris.append(
                join_uri(output["S3OutputPath"], best, "output", "model.tar.gz")
            )
        try:
            return all(self.store.list(uri) for uri in uris)
        except ObjectStoreError:
            return False
