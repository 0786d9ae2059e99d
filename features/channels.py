"""The Extract step's output as the later steps read it: a folder of Parquet files per
split (a training channel, a processing input) and the manifests beside them.

Train, Evaluate, Gate and the Baseline all read their splits through here, so a split
means the same rows to each of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from features.schema import SchemaError

if TYPE_CHECKING:
    import pandas as pd


def parquet_files(directory: Path) -> list[Path]:
    """The split's Parquet files under ``directory``, in a stable order.

    Raises:
        SchemaError: there are none (an empty or wrong input).
    """
    files = sorted(directory.rglob("*.parquet"))
    if not files:
        raise SchemaError(f"no Parquet files under {directory}")
    return files


def read_split(directory: Path) -> pd.DataFrame:
    """Every row of the split under ``directory``, as one frame."""
    import pandas as pd

    frames = [pd.read_parquet(path) for path in parquet_files(directory)]
    return pd.concat(frames, ignore_index=True)


def data_window(directory: Path) -> dict[str, str]:
    """As-of date, label window and data version from the Extract's manifests under
    ``directory`` (empty when it wrote none).
    """
    manifests = [
        json.loads(p.read_text()) for p in sorted(directory.rglob("manifest-*.json"))
    ]
    if not manifests:
        return {}
    parameters = manifests[0].get("parameters") or {}
    versions = sorted(
        {str((m.get("data_version") or {}).get("timestamp")) for m in manifests}
    )
    return {
        "as_of_date": str(parameters.get("as_of", "")),
        "label_window_days": str(parameters.get("label_window_days", "")),
        "data_version": " ".join(versions),  # the registry allows no commas
    }
