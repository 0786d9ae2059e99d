"""The calibration the artifact carries: JSON in, the same map out, strictly
increasing, and the identity for models saved without one.
"""

import json

import numpy as np
import pytest

from inference.calibration import Calibration, CalibrationError

PLATT = Calibration("platt", 1.45, -1.96, "validation", 7778, 863)


def test_a_platt_calibration_survives_json_and_applies_the_same():
    again = Calibration.from_dict(json.loads(json.dumps(PLATT.to_dict())))
    assert again == PLATT
    scores = np.array([0.0, 1e-30, 0.01, 0.38, 0.5, 0.9, 1.0], dtype=np.float32)
    logit = np.log(scores[2:6].astype(float) / (1 - scores[2:6].astype(float)))
    expected = 1 / (1 + np.exp(-(1.45 * logit - 1.96)))
    np.testing.assert_allclose(again.apply(scores)[2:6], expected, rtol=1e-12)
    # the ends stay the ends: no NaN, no clipping
    assert again.apply(scores)[0] == 0.0 and again.apply(scores)[-1] == 1.0


def test_platt_is_strictly_increasing_so_rankings_do_not_move():
    scores = np.sort(np.random.default_rng(1).random(10_000))
    scores = np.unique(np.concatenate([scores, [1e-12, 1 - 1e-9]]))
    calibrated = PLATT.apply(scores)
    assert np.all(np.diff(calibrated) > 0)
    assert np.all((calibrated > 0) & (calibrated < 1))


def test_the_identity_leaves_scores_as_they_are():
    identity = Calibration.identity()
    scores = np.array([0.2, 0.7], dtype=np.float32)
    np.testing.assert_array_equal(identity.apply(scores), scores.astype(np.float64))
    assert Calibration.from_dict(identity.to_dict()).is_identity
    assert "not a probability" in identity.describe()
    assert "fitted on the validation split (7,778 rows" in PLATT.describe()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "isotonic"}, "unknown calibration method"),
        ({"method": "platt", "slope": 1.0}, "without a usable"),
        ({"method": "platt", "slope": "steep", "intercept": 0}, "without a usable"),
        ({"method": "platt", "slope": -0.5, "intercept": 0}, "slope > 0"),
        ({"method": "platt", "slope": 0.0, "intercept": 0}, "slope > 0"),
        ({"method": "platt", "slope": 1.0, "intercept": float("nan")}, "finite"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_calibration_that_is_not_an_increasing_map_is_refused(data, message):
    with pytest.raises(CalibrationError, match=message):
        Calibration.from_dict(data)
