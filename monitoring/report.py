"""``report.html`` of a drift check: one self-contained page, no script, no fetches.

The markup is ``templates/drift.html.j2``, rendered by Jinja2 with autoescape: a
feature name or a violation's description cannot inject markup.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processing.html_pages import load_template

if TYPE_CHECKING:
    import jinja2


def render_report(drift: dict[str, Any], violations: list[dict[str, str]]) -> str:
    """The page of one drift check: the verdict and its violations, each feature's
    drift, the predictions' drift and the AUC on labelled rows.
    """
    return _template("drift.html.j2").render(
        drift=drift,
        window=", ".join(f"{k} {v}" for k, v in drift.get("window", {}).items()),
        violations=[
            (
                v["constraint_check_type"],
                v.get("feature_name") or v.get("metric_name", ""),
                v["description"],
            )
            for v in violations
        ],
        features=[(f, min(200, int((f["psi"] or 0) * 500))) for f in drift["features"]],
        prediction=drift.get("prediction"),
        performance=drift.get("performance"),
    )


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1e-3 and value
            else f"{value:.{digits}f}"
        )
    return str(value)


@cache
def _template(name: str) -> jinja2.Template:
    """A template of ``templates/`` (``processing.html_pages``), with the page's
    number formats."""
    return load_template(
        Path(__file__).parent / "templates",
        name,
        {
            "number": _number,
            "percent": "{:.2%}".format,
            "thousands": "{:,}".format,
        },
    )
