"""The distribution of the current predictions in Snowflake's PREDICTIONS table."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui
from stack.config import ConfigError

BINS = 20


def render() -> None:
    ctx = ui.context()
    ui.sidebar(ctx)
    try:
        table = data.predictions_table(ctx.config)
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        return
    st.title("Predictions")
    st.caption(f"Scores written back to `{table}`.")
    try:
        dates = ui.prediction_dates(ctx.key, ctx)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    if dates is None:
        st.info(
            f"No table `{table}` yet: the write-back job creates it when it first "
            "scores (`python -m pipelines.run`, or `python -m "
            "snowflake.sagemaker_predictions writeback`)."
        )
        return
    if not dates:
        st.info(f"`{table}` holds no predictions yet.")
        return
    as_of = st.selectbox("As-of date", dates, index=0, help="newest first")
    try:
        summary = ui.prediction_summary(ctx.key, ctx, as_of, BINS)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    columns = st.columns(3)
    columns[0].metric("Predictions", f"{summary.rows:,}")
    columns[1].metric("Model packages", len(summary.by_model))
    if summary.rows:
        mean = (summary.by_model["mean_score"] * summary.by_model["rows"]).sum()
        columns[2].metric("Mean score", f"{mean / summary.rows:.4f}")
    st.subheader(f"Score distribution as of {as_of}")
    histogram = summary.histogram.assign(
        score=summary.histogram["bin_start"].map(lambda s: f"{s:.2f}")
    )
    st.bar_chart(histogram, x="score", y="rows", color="model_package")
    st.subheader("Rows per model package")
    st.dataframe(
        summary.by_model,
        hide_index=True,
        width="stretch",
        column_config={
            name: st.column_config.NumberColumn(name, format="%.4f")
            for name in ("mean_score", "min_score", "max_score")
        },
    )


if __name__ == "__main__":
    render()
