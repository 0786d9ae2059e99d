"""The evaluation report's page: every section from the report's values, the values
escaped (a feature set's name or a gate rule cannot inject markup), a missing value a
failure rather than a blank cell, nothing fetched.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jinja2
import pytest

from processing.report import PLOTS, render_html

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'


def _bins(offset: float) -> list[dict[str, float]]:
    return [
        {
            "bin": i,
            "count": 10,
            "mean_predicted": i / 10 + offset,
            "observed_rate": i / 10,
        }
        for i in range(1, 11)
    ]


def _side(auc: float, offset: float) -> dict:
    return {
        "expected_calibration_error": offset,
        "auc": auc,
        "mean_score": 0.2 + offset,
        "bins": _bins(offset),
    }


REPORT = {
    "binary_classification_metrics": {
        name: {"value": value}
        for name, value in {
            "auc": 0.8123,
            "pr_auc": 0.5,
            "log_loss": 0.3,
            "brier_score": 0.1,
            "precision": 0.6,
            "recall": 0.4,
            "f1": 0.48,
            "accuracy": 0.9,
            "lift_top_decile": 3.2,
            "expected_calibration_error": 0.0123,
        }.items()
    },
    "evaluation": {"decision_threshold": 0.5, "rows": 100, "positive_rate": 0.2},
    "calibration": {
        "score": "calibrated churn probability",
        "before": _side(0.8123, 0.3),
        "after": _side(0.8123, 0.0123),
    },
    "gate": {
        "decision": "register",
        "rule": "absolute rule: test AUC 0.8123 >= threshold 0.7000",
        "challenger_auc": 0.8123,
        "champion_auc": 0.8,
        "champion_version": 3,
        "auc_threshold": 0.7,
        "champion_tolerance": 0.01,
    },
    "extract": {
        "feature_set": "churn",
        "parameters": {"as_of": "2026-06-30"},
        "data_versions": {"CUSTOMERS": {"timestamp": "2026-06-30T00:00:00Z"}},
        "query_sha256": "ab12",
    },
}


@pytest.fixture
def plots(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in PLOTS:
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    return paths


def test_the_page_shows_the_gate_metrics_data_calibration_and_every_plot(plots):
    page = render_html(REPORT, plots)
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    assert 'Registration gate: <span class="register">REGISTER</span>' in page
    assert "<td>0.8000 (version 3)</td>" in page
    assert "<tr><th>ROC AUC</th><td>0.8123</td></tr>" in page
    assert "<tr><th>F1 @ 0.5</th><td>0.4800</td></tr>" in page
    assert "<tr><th>As of</th><td>2026-06-30</td></tr>" in page
    assert "<tr><th>Mean score (churn rate 0.2000)</th><td>0.5000</td>" in page
    assert page.count("<tr><td>") == 10  # the reliability deciles
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert "<script" not in page and 'src="http' not in page and "<link" not in page


def test_without_a_gate_or_a_champion_or_calibration_those_parts_say_so(plots):
    report = copy.deepcopy(REPORT)
    del report["gate"]
    report["calibration"] = {"score": "the booster's probability"}
    page = render_html(report, plots)
    assert "Registration gate" not in page and "<h2>Calibration</h2>" not in page
    report["gate"] = {**REPORT["gate"], "decision": "reject", "champion_auc": None}
    page = render_html(report, plots)
    assert '<span class="reject">REJECT</span>' in page
    assert "<th>Champion AUC (same test split)</th><td>none</td>" in page


def test_hostile_values_are_escaped(plots):
    report = copy.deepcopy(REPORT)
    report["gate"]["rule"] = SCRIPT
    report["extract"]["feature_set"] = BREAKOUT
    report["calibration"]["score"] = SCRIPT
    page = render_html(report, plots)
    assert "<script" not in page and "<img src=x" not in page
    assert '<p class="rule">&lt;script&gt;alert(1)&lt;/script&gt;</p>' in page
    assert "<td>&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</td>" in page
    assert "<p>SCORE: &lt;script&gt;alert(1)&lt;/script&gt;.</p>" in page


def test_a_missing_value_fails_the_render_instead_of_leaving_a_blank(plots):
    report = copy.deepcopy(REPORT)
    del report["gate"]["rule"]
    with pytest.raises(jinja2.UndefinedError, match="rule"):
        render_html(report, plots)
