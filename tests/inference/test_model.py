"""The model wrapper scores exactly as XGBoost's public API does, then calibrates."""

import json
import logging
import shutil

import numpy as np
import pytest

from inference import scorer as scorer_module
from inference.model import ModelLoadError, load_model


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_predictions_equal_inplace_predict_bit_for_bit(model_dir, rows):
    loaded = load_model(model_dir)
    # XGBoost's direct call is in use with this xgboost
    assert loaded.scorer._direct is not None
    matrix = np.random.default_rng(rows).normal(size=(rows, 2)).astype(np.float32)
    matrix[0, 1] = np.nan
    expected = loaded.booster.inplace_predict(matrix).astype(np.float64)
    np.testing.assert_array_equal(loaded.predict_raw(matrix), expected)
    # float64 and non-contiguous input give the same answer
    wide = np.asfortranarray(matrix.astype(np.float64))
    np.testing.assert_array_equal(loaded.predict_raw(wide), expected)


def test_without_the_direct_call_the_public_api_scores(model_dir, monkeypatch):
    monkeypatch.setattr(scorer_module._DensePredictor, "build", lambda booster: None)
    loaded = load_model(model_dir, small_batch_rows=0)
    assert loaded.scorer._direct is None
    matrix = np.array([[2.0, 0.0], [-2.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(
        loaded.predict_raw(matrix), loaded.booster.inplace_predict(matrix)
    )


def test_a_matrix_of_the_wrong_width_is_refused(model_dir):
    with pytest.raises(ValueError, match="expected 2 features per row"):
        load_model(model_dir).predict(np.zeros((1, 3), dtype=np.float32))


def test_predictions_are_the_booster_scores_through_the_saved_calibration(model_dir):
    loaded = load_model(model_dir)
    saved = json.loads((model_dir / "calibration.json").read_text())
    assert loaded.calibration.to_dict() == saved and saved["method"] == "platt"
    matrix = np.random.default_rng(5).normal(size=(200, 2)).astype(np.float32)
    raw = loaded.predict_raw(matrix)
    np.testing.assert_array_equal(loaded.predict(matrix), loaded.calibration.apply(raw))
    assert not np.allclose(loaded.predict(matrix), raw)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(loaded.predict(matrix)[order]) >= 0)


def test_a_model_saved_without_calibration_serves_its_raw_scores_and_says_so(
    model_dir, tmp_path, caplog
):
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    (old / "calibration.json").unlink()
    with caplog.at_level(logging.WARNING, logger="inference.model"):
        loaded = load_model(old)
    assert loaded.calibration.is_identity
    assert "no calibration.json" in caplog.text and "identity" in caplog.text
    matrix = np.array([[2.0, 0.0], [-2.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(matrix), loaded.predict_raw(matrix))


def test_a_calibration_that_would_not_keep_the_ranking_is_not_loaded(
    model_dir, tmp_path
):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "calibration.json").write_text(
        json.dumps({"method": "platt", "slope": -1.0, "intercept": 0.0})
    )
    with pytest.raises(ModelLoadError, match=r"calibration.json: .*slope > 0"):
        load_model(bad)


def test_importing_the_module_leaves_xgboost_unloaded_until_a_model_loads():
    """A step that only unpacks an archive (the Gate without a champion, a deploy)
    does not pay XGBoost's import (seconds on a busy machine).
    """
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    code = (
        "import sys, inference.model, inference.scorer, inference.app; "
        "print('xgboost' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "False"


def test_a_worker_loads_xgboost_without_scikit_learn_and_scores_the_same(model_dir):
    """The serving worker's import (inference.worker) skips scikit-learn; its scores
    are XGBoost's, bit for bit, as in a process where XGBoost imported it.
    """
    import subprocess
    import sys

    script = (
        "import sys, json, pathlib, numpy as np\n"
        "from inference.model import import_xgboost_without_scikit_learn\n"
        "import_xgboost_without_scikit_learn()\n"
        "from inference.model import load_model\n"
        "m = load_model(pathlib.Path(sys.argv[1]), 1)\n"
        "x = np.array([[2.0, 0.0], [-2.0, np.nan], [0.5, 1.5]], dtype=np.float32)\n"
        "print(json.dumps({'sklearn': 'sklearn' in sys.modules,"
        " 'scores': m.predict_raw(x).tolist()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["sklearn"] is False
    here = load_model(model_dir, 1)
    matrix = np.array([[2.0, 0.0], [-2.0, np.nan], [0.5, 1.5]], dtype=np.float32)
    assert result["scores"] == here.predict_raw(matrix).tolist()
