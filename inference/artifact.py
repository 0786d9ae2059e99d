"""The model artifact: the folder Train writes and every scorer reads, and its archive.

The folder holds

- ``model.json``: the booster (XGBoost's JSON format), trimmed to its best iteration;
- ``calibration.json``: what turns the booster's score into SCORE
  (``inference.calibration``);
- ``schema.json``: the feature schema the model was trained on;
- ``metadata.json``: its story (the MLflow run, the git commit, the data window...).

SageMaker packs the training job's ``/opt/ml/model`` into ``model.tar.gz``; a
processing step gets that archive as its model input, an endpoint gets it as its
``ModelDataUrl``. This module writes the folder (``write_folder``), unpacks the archive
(``unpack``) and finds the folder in a step's input (``folder_in``);
``inference.model.load_model`` reads it into a scorer.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xgboost as xgb

    from features import FeatureSchema
    from inference.calibration import Calibration

ARCHIVE = "model.tar.gz"
MODEL_FILE = "model.json"
CALIBRATION_FILE = "calibration.json"
SCHEMA_FILE = "schema.json"
METADATA_FILE = "metadata.json"
__all__ = [
    "ARCHIVE",
    "CALIBRATION_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "SCHEMA_FILE",
    "folder_in",
    "unpack",
    "write_folder",
]


def write_folder(
    folder: Path,
    booster: xgb.Booster,
    calibration: Calibration,
    schema: FeatureSchema,
    metadata: dict[str, Any],
) -> None:
    """Write the artifact's four files into ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(folder / MODEL_FILE)
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=2))
    (folder / SCHEMA_FILE).write_text(json.dumps(schema.to_dict(), indent=2))
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))


def unpack(archive: Path, target: Path) -> Path:
    """Extract a SageMaker ``model.tar.gz`` into ``target`` (refusing unsafe
    members: absolute paths, ``..``, links out of it); ``target``.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


def folder_in(directory: Path) -> Path:
    """The artifact's folder in a step's model input: the input itself, or the
    archive in it unpacked beside it (``unpacked/``).
    """
    archive = directory / ARCHIVE
    if archive.exists():
        return unpack(archive, directory / "unpacked")
    return directory
