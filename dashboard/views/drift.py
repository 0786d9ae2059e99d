"""Drift per feature over time, from the drift checks' ``drift.json`` files."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, ui
from pipelines.console import location

SHOWN = 6  # features drawn by default, the highest PSI first


def render() -> None:
    ctx = ui.context()
    ui.sidebar(ctx)
    monitoring = ctx.config.monitoring
    st.title("Drift")
    prefix = data.drift_prefix(ctx.config)
    st.caption(f"Drift checks under `{location(ctx.resources.store, prefix)}`.")
    try:
        history = ui.drift_history(ctx.key, ctx)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    for problem in history.unreadable:
        st.warning(f"Left out an unreadable drift result: {problem}")
    latest = history.latest
    if latest is None:
        st.info(
            "No drift results yet. `python -m monitoring check` compares recent "
            "captured or scored data with the training baseline and writes one here."
        )
        return
    st.subheader("PSI per feature over time")
    st.caption(
        f"Population stability index of each feature against the training baseline "
        f"at each check (UTC), one line per feature and source (the endpoint's "
        f"capture, the PREDICTIONS table); above {monitoring.psi_threshold} counts "
        f"as drift."
    )
    psi = data.psi_over_time(history)
    ranked = psi.groupby("feature")["psi"].max().sort_values(ascending=False)
    chosen = st.multiselect(
        "Features",
        ranked.index.tolist(),
        default=ranked.index[:SHOWN].tolist(),
        help="highest PSI first",
    )
    if chosen:
        shown = psi[psi["feature"].isin(chosen)]
        st.altair_chart(_psi_chart(shown, monitoring.psi_threshold))
    st.subheader(
        f"Latest check: {latest.checked_at:%Y-%m-%d %H:%M:%S} UTC ({latest.source})"
    )
    document = latest.document
    columns = st.columns(4)
    columns[0].metric("Rows checked", f"{int(document.get('rows') or 0):,}")
    columns[1].metric("Violations", latest.violations)
    prediction = document.get("prediction") or {}
    if prediction.get("psi") is not None:
        columns[2].metric(
            "Prediction PSI",
            f"{prediction['psi']:.3f}",
            _delta(prediction.get("mean"), prediction.get("baseline_mean"), "mean"),
            delta_color="off",
            delta_arrow="off",
        )
    performance = document.get("performance") or {}
    if performance.get("auc") is not None:
        columns[3].metric(
            "AUC on new labels",
            f"{performance['auc']:.4f}",
            _delta(performance.get("auc"), performance.get("baseline_auc"), ""),
        )
    else:
        columns[3].metric("AUC on new labels", "no labels yet")
    st.caption(
        f"Source {latest.source}: {latest.window}; model "
        f"`{document.get('model_package_arn', '?')}`."
    )
    try:
        found = ui.drift_violations(ctx.key, ctx, latest.uri)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    if found.empty:
        st.success("No violations in the latest check.")
    else:
        st.error(f"{len(found)} violation(s) in the latest check")
        st.dataframe(found, hide_index=True, width="stretch")
    features = data.feature_drift(latest)
    st.dataframe(
        features,
        hide_index=True,
        width="stretch",
        height=ui.table_height(len(features), 40),
        column_config={
            name: st.column_config.NumberColumn(name, format="%.4f")
            for name in data.FEATURE_DRIFT_COLUMNS[1:-1]
        },
    )
    _report(ctx, latest)
    with st.expander(f"All {len(history.results)} checks"):
        st.dataframe(
            [
                {
                    "checked_at": r.checked_at,
                    "source": r.source,
                    "window": r.window,
                    "rows": r.document.get("rows"),
                    "violations": r.violations,
                    "report": location(ctx.resources.store, r.report_uri),
                }
                for r in reversed(history.results)
            ],
            hide_index=True,
            width="stretch",
        )


def _psi_chart(psi: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """PSI over time: colour per feature, dash and point shape per source, a tick at
    each check labelled with its time (UTC, to the second: checks can be seconds
    apart), the threshold as a red rule.
    """
    psi = psi.assign(checked=psi["checked_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC"))
    checks = [t.isoformat() for t in psi["checked_at"].unique()]  # the ticks
    lines = (
        alt.Chart(psi)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "checked_at:T",
                title="checked at (UTC)",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(
                    values=checks,
                    format="%b %d %H:%M:%S",
                    labelAngle=-30,
                    labelOverlap=True,
                ),
            ),
            y=alt.Y("psi:Q", title="PSI"),
            color=alt.Color("feature:N"),
            strokeDash=alt.StrokeDash("source:N"),
            shape=alt.Shape("source:N"),
            tooltip=[
                alt.Tooltip("checked:N", title="checked at"),
                "source:N",
                "feature:N",
                alt.Tooltip("psi:Q", format=".3f"),
            ],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"psi": [threshold]}))
        .mark_rule(color="red", strokeDash=[4, 4])
        .encode(y="psi:Q")
    )
    return lines + rule


def _report(ctx: ui.Context, latest: data.DriftResult) -> None:
    where = location(ctx.resources.store, latest.report_uri)
    html = ui.report(ctx.key, ctx, latest.report_uri)
    if html is None:
        st.caption(f"No HTML report at `{where}`.")
        return
    st.markdown(f"HTML report: `{where}`")
    st.download_button(
        "Download the report", html, file_name="report.html", mime="text/html"
    )


def _delta(value: float | None, baseline: float | None, what: str) -> str | None:
    if value is None or baseline is None:
        return None
    return f"{value - baseline:+.4f} vs baseline {what}".replace("  ", " ").strip()


if __name__ == "__main__":
    render()
