"""A small trained model shared by the serving tests."""

import numpy as np
import pandas as pd
import pytest

from features import FeatureSchema
from training.hyperparameters import DEFAULTS
from training.train import save_model, train_model

SCHEMA = FeatureSchema.from_dict(
    {"entity_id": "id", "label": "y", "features": [{"name": "x1"}, {"name": "x2"}]}
)


@pytest.fixture(scope="package")
def model_dir(tmp_path_factory):
    rng = np.random.default_rng(0)

    def data(n):
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        return pd.DataFrame(
            {"id": range(n), "x1": x1, "x2": x2, "y": (x1 > 0.5).astype(int)}
        )

    folder = tmp_path_factory.mktemp("model")
    save_model(
        train_model(data(500), data(200), SCHEMA, {**DEFAULTS, "num_round": 20}), folder
    )
    return folder
