"""Pipeline executions, newest first, and the steps of the one selected."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

LIMIT = 50


def render() -> None:
    ctx = ui.context()
    ui.sidebar(ctx)
    st.title("Pipeline executions")
    try:
        executions, where = ui.executions(ctx.key, ctx, LIMIT)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    st.caption(f"From {where}; the newest {LIMIT}.")
    if executions.attrs.get("unreadable"):
        st.warning(
            f"{executions.attrs['unreadable']} execution record(s) could not be read "
            "(being written, or from an older version) and are left out."
        )
    if executions.empty:
        st.info(
            "No pipeline executions yet. Run `python -m pipelines.run` (locally) or "
            "`python -m pipelines.run --env dev --upsert --start` (SageMaker)."
        )
        return
    counts = executions["status"].value_counts()
    columns = st.columns(4)
    columns[0].metric("Executions", len(executions))
    for column, status in zip(
        columns[1:], ("Succeeded", "Failed", "Executing"), strict=True
    ):
        column.metric(status, int(counts.get(status, 0)))
    st.dataframe(
        executions,
        hide_index=True,
        width="stretch",
        height=ui.table_height(len(executions), 10),
        column_config={
            "duration_seconds": st.column_config.NumberColumn(
                "duration (s)", format="%.1f"
            ),
        },
    )
    chosen = st.selectbox(
        "Execution",
        executions["execution"].tolist(),
        format_func=lambda e: _label(executions, e),
    )
    if chosen is None:
        return
    row = executions.set_index("execution").loc[chosen]
    st.subheader(f"Steps of {chosen}")
    st.markdown(
        f"Status {ui.status_badge(row['status'])}  ·  started {row['started_at']}"
    )
    try:
        steps = ui.steps(ctx.key, ctx, chosen)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    if steps.empty:
        st.info("This execution has no steps recorded yet.")
        return
    failed = steps[steps["status"] == "Failed"]
    for _, step in failed.iterrows():
        st.error(f"Step {step['step']} failed: {step['failure_reason'] or 'no reason'}")
    st.dataframe(
        steps,
        hide_index=True,
        width="stretch",
        height=ui.table_height(len(steps), 30),
        column_config={
            "duration_seconds": st.column_config.NumberColumn(
                "duration (s)", format="%.1f"
            ),
        },
    )
    timed = steps.dropna(subset=["duration_seconds"])
    if not timed.empty:
        st.caption("Step durations (seconds)")
        st.bar_chart(timed, x="step", y="duration_seconds", horizontal=True, sort=False)


def _label(executions: pd.DataFrame, execution: str) -> str:
    row = executions.set_index("execution").loc[execution]
    return f"{execution}  ·  {row['status']}  ·  {row['started_at']}"


if __name__ == "__main__":
    render()
