"""The drift check's page: the verdict, each feature's drift, the predictions and the
AUC; values escaped (a feature name or a violation's description cannot inject
markup), a missing value a failure, nothing fetched.
"""

from __future__ import annotations

import copy

import jinja2
import pytest

from monitoring.report import render_report

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'


def _feature(name: str, psi: float | None, drifted: bool) -> dict:
    return {
        "name": name,
        "psi": psi,
        "ks_statistic": 0.25 if psi else None,
        "ks_p_value": 1e-9 if psi else None,
        "missing_fraction": 0.0125,
        "baseline_missing_fraction": 0.01,
        "out_of_range_fraction": 0.0,
        "type_mismatch_fraction": 0.0,
        "drifted": drifted,
    }


DRIFT = {
    "checked_at": "2026-07-02T05:00:00Z",
    "endpoint": "churn-endpoint",
    "rows": 12345,
    "source": "predictions",
    "window": {"as_of": "2026-06-30"},
    "model_package_arn": "arn:aws:sagemaker:us-east-1:000000000000:model-package/g/1",
    "features": [
        _feature("tenure_days", 0.5, True),
        _feature("plan_tier", None, False),
    ],
    "prediction": {"psi": 0.01, "mean": 0.2, "baseline_mean": 0.21},
    "performance": {
        "auc": 0.81234,
        "labelled_rows": 4321,
        "as_of_dates": ["2026-05-31", "2026-06-30"],
        "baseline_auc": 0.8,
    },
}
VIOLATION = {
    "feature_name": "tenure_days",
    "constraint_check_type": "baseline_drift_check",
    "description": "distribution drift: PSI 0.500",
}


def test_the_page_shows_the_verdict_features_predictions_and_performance():
    page = render_report(DRIFT, [VIOLATION])
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    assert "<title>Drift check 2026-07-02T05:00:00Z</title>" in page
    assert "12,345 rows from predictions\n(as_of 2026-06-30)" in page
    assert '<p class="bad">1 violation(s)</p>' in page
    assert "<li><b>baseline_drift_check</b> tenure_days: distribution drift" in page
    drifted, quiet = page.split('<tr class="')[1:]
    assert drifted.startswith('drifted"><td>tenure_days</td><td>0.500 ')
    assert 'style="width:200px"' in drifted and "<td>1.25%</td>" in drifted
    assert "<td>0.250</td><td>1e-09</td>" in drifted  # tiny p-values keep their digits
    assert quiet.startswith('"><td>plan_tier</td><td>– ')
    assert "Prediction PSI 0.010; mean score 0.200 (baseline 0.210)" in page
    assert "AUC 0.8123 on 4,321 labelled rows (2026-05-31, 2026-06-30)" in page
    assert "<script" not in page and "src=" not in page and "<link" not in page


def test_a_clean_check_without_scores_or_labels_says_so():
    drift = {**DRIFT, "prediction": None, "performance": None}
    page = render_report(drift, [])
    assert '<p class="ok">No violations</p>' in page
    assert "No scores in the checked data." in page
    assert "No scored rows have complete labels yet." in page


def test_hostile_values_are_escaped():
    drift = copy.deepcopy(DRIFT)
    drift["features"][0]["name"] = BREAKOUT
    drift["endpoint"] = SCRIPT
    violation = {"metric_name": SCRIPT, "constraint_check_type": "LessThanThreshold"}
    page = render_report(drift, [{**violation, "description": BREAKOUT}])
    assert "<script" not in page and "<img src=x" not in page
    assert "<h1>Drift check of &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page
    assert "<td>&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</td>" in page
    assert (
        "<li><b>LessThanThreshold</b> &lt;script&gt;alert(1)&lt;/script&gt;: "
        "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</li>"
    ) in page


def test_a_missing_value_fails_the_render_instead_of_leaving_a_blank():
    drift = copy.deepcopy(DRIFT)
    del drift["features"][0]["ks_statistic"]
    with pytest.raises(jinja2.UndefinedError, match="ks_statistic"):
        render_report(drift, [])
