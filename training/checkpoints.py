"""Checkpoints for managed spot training: save every few rounds, resume after a stop.

SageMaker syncs ``/opt/ml/checkpoints`` with the step's checkpoint prefix, which is
fixed per pipeline (an execution id there would defeat step caching). So checkpoints
live in a subfolder named by a fingerprint of what the model is trained from (the
hyperparameters and the train/validation data), and a job resumes only from its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INTERVAL = 10  # boosting rounds between checkpoints
_ROUND = re.compile(r"^model_(\d+)\.ubj$")


def fingerprint(hyperparameters: Mapping[str, Any], channels: list[Path]) -> str:
    """A digest of the hyperparameters and every data file's name, size and content
    hash (the Parquet shards are small enough to hash once per job).
    """
    digest = hashlib.sha256(json.dumps(dict(hyperparameters), sort_keys=True).encode())
    for channel in channels:
        for path in sorted(channel.rglob("*.parquet")):
            digest.update(str(path.relative_to(channel)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def latest(directory: Path) -> tuple[Path, int] | None:
    """The newest checkpoint in ``directory`` and the rounds it holds."""
    found = [
        (int(m.group(1)), p)
        for p in directory.glob("model_*.ubj")
        if (m := _ROUND.match(p.name))
    ]
    if not found:
        return None
    rounds, path = max(found)
    return path, rounds + 1
