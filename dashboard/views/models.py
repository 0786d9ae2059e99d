"""Model versions of the package group: approval status and test metrics."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import data, ui


def render() -> None:
    ctx = ui.context()
    ui.sidebar(ctx)
    group = ctx.config.sagemaker.model_package_group
    st.title("Model versions")
    endpoint = _serving(ctx)
    st.caption(
        f"Model package group `{group}`, newest first; `serving` marks the version "
        f"endpoint `{endpoint.endpoint}` serves now."
    )
    try:
        versions = ui.model_versions(ctx.key, ctx, endpoint.now)
    except data.SourceUnavailable as exc:
        ui.unavailable(exc)
    if versions.empty:
        st.info(
            f"No versions registered in `{group}` yet: the pipeline's Register step "
            "adds one when a model passes the gate."
        )
        return
    approved = versions[versions["approval_status"] == "Approved"]
    columns = st.columns(5)
    columns[0].metric("Versions", len(versions))
    columns[1].metric("Approved", len(approved))
    columns[2].metric(
        "Pending approval",
        int((versions["approval_status"] == "PendingManualApproval").sum()),
    )
    if approved.empty:
        columns[3].metric("Newest approved", "none")
    else:
        newest = approved.iloc[0]
        columns[3].metric(
            "Newest approved",
            f"v{newest['version']}",
            f"test AUC {newest['test_auc']:.4f}",
            delta_color="off",
            delta_arrow="off",
        )
    _serving_metric(columns[4], endpoint, versions)
    st.dataframe(
        versions,
        hide_index=True,
        width="stretch",
        column_config={
            "serving": st.column_config.CheckboxColumn(
                "serving", help=f"served by {endpoint.endpoint} now"
            ),
            **{
                name: st.column_config.NumberColumn(name, format="%.4f")
                for name in ("test_auc", "pr_auc", "log_loss", "f1")
            },
        },
    )
    metrics = versions.set_index("version")[["test_auc", "pr_auc", "f1"]].sort_index()
    if len(metrics) > 1 and metrics.notna().any().any():
        st.caption("Test metrics by version")
        st.line_chart(metrics)


def _serving(ctx: ui.Context) -> data.Serving:
    """The endpoint and what it serves; unknown (a warning) if it cannot be read."""
    try:
        return ui.serving(ctx.key, ctx)
    except data.SourceUnavailable as exc:
        st.warning(f"Which version serves is unknown: {exc}")
        return data.Serving(ctx.config.sagemaker.endpoint_name)


def _serving_metric(column: Any, endpoint: data.Serving, versions: Any) -> None:
    served = versions[versions["serving"]]
    if endpoint.now is None:
        value = "none"
    elif served.empty:  # a package of another group
        value = data.package_label(endpoint.now)
    else:
        value = f"v{served.iloc[0]['version']}"
    status = endpoint.status or "does not exist"
    column.metric(
        "Serving",
        value,
        f"{endpoint.endpoint} {status}",
        delta_color="off",
        delta_arrow="off",
    )


if __name__ == "__main__":
    render()
