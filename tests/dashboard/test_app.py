"""Every page of the dashboard renders, with data and without (Streamlit's AppTest)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from stack.endpoints import LocalEndpoints
from tests.dashboard.conftest import EARLIER_AS_OF, FEATURES, GROUP, DashboardState

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PAGES = (
    "views/executions.py",
    "views/models.py",
    "views/drift.py",
    "views/predictions.py",
)


def _open(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30).run()
    if page != PAGES[0]:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def _text(app: AppTest) -> str:
    parts = [
        e.value
        for kind in (
            "markdown",
            "caption",
            "info",
            "error",
            "success",
            "warning",
            "subheader",
            "title",
        )
        for e in getattr(app, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_executions_page(dashboard_state: DashboardState) -> None:
    app = _open(PAGES[0])

    assert _metrics(app) == {
        "Executions": "1",
        "Succeeded": "0",
        "Failed": "1",
        "Executing": "0",
    }
    executions = app.dataframe[0].value
    assert executions["execution"].tolist() == ["a1b2c3d4e5f6"]
    steps = app.dataframe[1].value
    assert steps["step"].tolist() == ["Extract", "Train", "CheckAuc"]
    assert "Step CheckAuc failed: test AUC 0.61 < threshold 0.70" in [
        e.value for e in app.error
    ]


def test_models_page(dashboard_state: DashboardState) -> None:
    app = _open(PAGES[1])

    metrics = _metrics(app)
    assert metrics["Versions"] == "2"
    assert metrics["Approved"] == "1"
    assert metrics["Pending approval"] == "1"
    assert metrics["Newest approved"] == "v1"
    assert metrics["Serving"] == "none"  # no endpoint in this state
    versions = app.dataframe[0].value
    assert versions["version"].tolist() == [2, 1]
    assert versions["serving"].tolist() == [False, False]
    assert versions["test_auc"].tolist() == [0.8123, 0.8011]
    assert versions["approval_status"].tolist() == ["PendingManualApproval", "Approved"]


def test_models_page_marks_the_version_the_endpoint_serves(
    dashboard_state: DashboardState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the endpoint (its interface: no server is started) serves version 1
    arn = f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{GROUP}/1"
    served = SimpleNamespace(status="InService")
    monkeypatch.setattr(LocalEndpoints, "describe", lambda self, name: served)
    monkeypatch.setattr(LocalEndpoints, "serving_package", lambda self, name: arn)

    app = _open(PAGES[1])

    assert _metrics(app)["Serving"] == "v1"
    assert app.dataframe[0].value["serving"].tolist() == [False, True]
    served.status = "Stopped"  # a stopped endpoint serves nothing
    app.button[0].click().run()  # Refresh
    assert _metrics(app)["Serving"] == "none"


def test_drift_page(dashboard_state: DashboardState) -> None:
    app = _open(PAGES[2])

    metrics = _metrics(app)
    assert metrics["Rows checked"] == "4,321"
    assert metrics["Violations"] == "1"
    assert metrics["AUC on new labels"] == "no labels yet"
    assert "1 violation(s) in the latest check" in [e.value for e in app.error]
    violations, features = app.dataframe[0].value, app.dataframe[1].value
    assert violations["feature_name"].tolist() == ["tenure_days"]
    assert sorted(features["feature"]) == sorted(FEATURES)
    assert features["drifted"].tolist() == [True, False, False]
    text = _text(app)
    assert "Latest check: 2026-11-24 10:00:00 UTC (capture)" in text
    assert "captured 2026-11-23 10:00 UTC to 2026-11-24 10:00 UTC" in text
    report = dashboard_state.store.path_of(dashboard_state.drift_uris[1]).with_name(
        "report.html"
    )
    assert str(report.resolve()) in text
    history = app.dataframe[2].value
    assert len(history) == 2
    assert history["source"].tolist() == ["capture", "capture"]


def test_drift_chart_ticks_each_check_and_draws_a_series_per_source(
    dashboard_state: DashboardState,
) -> None:
    app = _open(PAGES[2])

    chart = next(e for e in app.main if e.type == "vega_lite_chart")
    lines = json.loads(chart.proto.spec)["layer"][0]
    x = lines["encoding"]["x"]
    assert x["scale"] == {"type": "utc"}
    assert x["axis"]["values"] == [
        "2026-11-23T10:00:00+00:00",
        "2026-11-24T10:00:00+00:00",
    ]
    assert x["axis"]["format"].endswith("%H:%M:%S")
    assert lines["encoding"]["strokeDash"]["field"] == "source"


def test_predictions_page_latest_date_by_default(
    dashboard_state: DashboardState,
) -> None:
    app = _open(PAGES[3])

    assert _metrics(app)["Predictions"] == "30"
    assert _metrics(app)["Model packages"] == "2"
    by_model = app.dataframe[0].value
    assert dict(zip(by_model["model_package"], by_model["rows"], strict=True)) == {
        "churn-models/1": 20,
        "churn-models/2": 10,
    }
    app.selectbox[0].select(EARLIER_AS_OF).run()
    assert not app.exception
    assert _metrics(app)["Predictions"] == "5"
    assert _metrics(app)["Model packages"] == "1"


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (PAGES[0], "No pipeline executions yet"),
        (PAGES[1], "No versions registered in `churn-models` yet"),
        (PAGES[2], "No drift results yet"),
        (PAGES[3], "No table `MLOPS.CHURN.PREDICTIONS` yet"),
    ],
)
def test_pages_say_when_there_is_nothing_yet(
    dashboard_env: Path, page: str, message: str
) -> None:
    app = _open(page)

    assert any(message in e.value for e in app.info), [e.value for e in app.info]
    assert not app.error


def test_a_bad_configuration_is_shown_not_raised(
    dashboard_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ENV", "nowhere")
    app = AppTest.from_file(APP, default_timeout=30).run()

    assert not app.exception
    assert "unknown environment 'nowhere'" in app.error[0].value


def test_an_incomplete_aws_configuration_is_shown_not_raised(
    dashboard_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ENV", "dev")  # no snowflake.account: nothing is called
    app = AppTest.from_file(APP, default_timeout=30).run()

    assert not app.exception
    assert "snowflake.account is not set" in app.error[0].value
