"""The model artifact's one home: written by training, found, unpacked and loaded."""

import io
import tarfile

import numpy as np
import pytest

from inference import artifact
from inference.model import load_model
from tests.processing.test_evaluate import SCHEMA, synthetic
from training.hyperparameters import DEFAULTS
from training.model import save_model
from training.train import train_model


@pytest.fixture(scope="module")
def trained():
    return train_model(
        synthetic(600, 1), synthetic(200, 2), SCHEMA, {**DEFAULTS, "num_round": 10}
    )


def pack(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)


def test_what_training_writes_every_scorer_loads_from_the_folder_or_the_archive(
    trained, tmp_path
):
    folder = tmp_path / "model"
    save_model(trained, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            artifact.MODEL_FILE,
            artifact.CALIBRATION_FILE,
            artifact.SCHEMA_FILE,
            artifact.METADATA_FILE,
        ]
    )
    assert artifact.folder_in(folder) == folder  # a folder is used as it is
    step_input = tmp_path / "input"
    step_input.mkdir()
    pack(folder, step_input / artifact.ARCHIVE)
    unpacked = artifact.folder_in(step_input)
    assert unpacked == step_input / "unpacked"
    matrix = np.random.default_rng(0).normal(size=(5, len(SCHEMA.features)))
    np.testing.assert_array_equal(
        load_model(unpacked).predict(matrix), load_model(folder).predict(matrix)
    )


def test_an_archive_with_a_member_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / artifact.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        artifact.unpack(archive, tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists()
