"""The model wrapper scores exactly as XGBoost's public API does."""

import numpy as np
import pytest

from inference import model as model_module
from inference.model import load_model


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_predictions_equal_inplace_predict_bit_for_bit(model_dir, rows):
    loaded = load_model(model_dir)
    assert loaded._direct is not None  # the fast path is in use with this xgboost
    matrix = np.random.default_rng(rows).normal(size=(rows, 2)).astype(np.float32)
    matrix[0, 1] = np.nan
    expected = loaded.booster.inplace_predict(matrix).astype(np.float64)
    np.testing.assert_array_equal(loaded.predict(matrix), expected)
    # float64 and non-contiguous input give the same answer
    wide = np.asfortranarray(matrix.astype(np.float64))
    np.testing.assert_array_equal(loaded.predict(wide), expected)


def test_without_the_fast_path_the_public_api_scores(model_dir, monkeypatch):
    monkeypatch.setattr(model_module._DensePredictor, "build", lambda booster: None)
    loaded = load_model(model_dir)
    assert loaded._direct is None
    matrix = np.array([[2.0, 0.0], [-2.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(
        loaded.predict(matrix), loaded.booster.inplace_predict(matrix)
    )


def test_a_matrix_of_the_wrong_width_is_refused(model_dir):
    with pytest.raises(ValueError, match="expected 2 features per row"):
        load_model(model_dir).predict(np.zeros((1, 3), dtype=np.float32))
