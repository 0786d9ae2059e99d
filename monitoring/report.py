"""``report.html`` of a drift check: one self-contained page, no script, no fetches."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
tr.drifted td{background:#fde2e1}
.bar{display:inline-block;height:.7rem;background:#4a78b5}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34;font-weight:600}
"""


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1e-3 and value
            else f"{value:.{digits}f}"
        )
    return escape(str(value))


def render_report(drift: dict[str, Any], violations: list[dict[str, str]]) -> str:
    verdict = (
        f'<p class="bad">{len(violations)} violation(s)</p>'
        if violations
        else '<p class="ok">No violations</p>'
    )
    rows = []
    for f in drift["features"]:
        width = min(200, int((f["psi"] or 0) * 500))
        rows.append(
            f'<tr class="{"drifted" if f["drifted"] else ""}">'
            f"<td>{escape(f['name'])}</td>"
            f"<td>{_number(f['psi'])} "
            f"<span class='bar' style='width:{width}px'></span></td>"
            f"<td>{_number(f['ks_statistic'])}</td><td>{_number(f['ks_p_value'])}</td>"
            f"<td>{f['missing_fraction']:.2%}</td>"
            f"<td>{f['baseline_missing_fraction']:.2%}</td>"
            f"<td>{f['out_of_range_fraction']:.2%}</td>"
            f"<td>{f['type_mismatch_fraction']:.2%}</td>"
            f"<td>{'yes' if f['drifted'] else ''}</td></tr>"
        )
    listed = "".join(
        f"<li><b>{escape(v['constraint_check_type'])}</b> "
        f"{escape(v.get('feature_name') or v.get('metric_name', ''))}: "
        f"{escape(v['description'])}</li>"
        for v in violations
    )
    prediction = drift.get("prediction")
    prediction_html = (
        f"<p>Prediction PSI {_number(prediction['psi'])}; mean score "
        f"{_number(prediction['mean'])} "
        f"(baseline {_number(prediction['baseline_mean'])})"
        "</p>"
        if prediction
        else "<p>No scores in the checked data.</p>"
    )
    perf = drift.get("performance")
    perf_html = (
        f"<p>AUC {_number(perf['auc'], 4)} on {perf['labelled_rows']:,} labelled rows "
        f"({escape(', '.join(perf['as_of_dates']))}); the model's test AUC "
        f"{_number(perf['baseline_auc'], 4)}</p>"
        if perf
        else "<p>No scored rows have complete labels yet.</p>"
    )
    window = ", ".join(f"{k} {v}" for k, v in drift.get("window", {}).items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8">
<title>Drift check {escape(drift["checked_at"])}</title>
<style>{_STYLE}</style></head><body>
<h1>Drift check of {escape(drift["endpoint"])}</h1>
<p>{escape(drift["checked_at"])} · {drift["rows"]:,} rows from {escape(drift["source"])}
({escape(window)}) · baseline of {escape(drift["model_package_arn"])}</p>
{verdict}<ul>{listed}</ul>
<h2>Features</h2>
<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>KS p</th><th>missing</th>
<th>missing (baseline)</th><th>out of range</th><th>wrong type</th><th>drifted</th></tr>
{"".join(rows)}</table>
<h2>Predictions</h2>{prediction_html}
<h2>Performance</h2>{perf_html}
</body></html>
"""
