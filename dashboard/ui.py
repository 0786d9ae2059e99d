"""The Streamlit side shared by the pages: configuration, resources and cached reads.

The configuration is read on every run (two small YAML files) with
``stack.config.load_config``, so ``MLOPS_ENV`` and ``MLOPS_*`` variables decide the
environment as they do for every other command. Resources are cached per
configuration, and reads are cached for ``TTL_SECONDS`` keyed by the configuration, so a
page shows data at most that old; the sidebar's Refresh button clears the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
import streamlit as st

from dashboard import data
from stack.config import Config, ConfigError, load_config
from stack.resources import Resources, build_resources
from stack.warehouse import EmbeddedWarehouse, WarehouseUnavailable

TTL_SECONDS = 60
# The pipeline may hold the embedded Snowflake's DuckDB file while it writes; the
# dashboard waits this long for it, then says so, rather than hang for the default 300s
EMBEDDED_LOCK_SECONDS = 10.0


@dataclass(frozen=True)
class Context:
    config: Config
    resources: Resources
    key: str  # identifies the configuration in cache keys


def context() -> Context:
    """The configuration and resources of this run; a bad configuration stops the
    page with its reason.
    """
    try:
        config = load_config()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
    key = config.model_dump_json()
    try:
        resources = _resources(key, config)
    except WarehouseUnavailable as exc:  # e.g. snowflake.account not set
        st.error(f"Configuration error: {exc}")
        st.stop()
    return Context(config, resources, key)


@st.cache_resource(show_spinner=False)
def _resources(key: str, _config: Config) -> Resources:
    resources = build_resources(_config)
    warehouse = resources.warehouse
    if isinstance(warehouse, EmbeddedWarehouse):
        resources.warehouse = EmbeddedWarehouse(
            warehouse.root,
            warehouse.database,
            warehouse.schema,
            lock_timeout=EMBEDDED_LOCK_SECONDS,
        )
    return resources


def sidebar(ctx: Context) -> None:
    config = ctx.config
    st.sidebar.caption(f"Environment: **{config.env}**")
    if ctx.resources.pipelines.runs_here:  # its records are in the state folder
        st.sidebar.caption(f"State: `{config.state_dir.resolve()}`")
    st.sidebar.caption(f"Artifacts: `{config.artifact_root}`")
    if st.sidebar.button("Refresh", help=f"reads are cached for {TTL_SECONDS}s"):
        st.cache_data.clear()


def unavailable(exc: data.SourceUnavailable) -> None:
    """Show why a source could not be read, and stop the page there."""
    st.error(str(exc))
    st.stop()


# -- cached reads (the underscore arguments are not part of the cache key) ----------


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def executions(key: str, _ctx: Context, limit: int) -> tuple[pd.DataFrame, str]:
    pipelines = _ctx.resources.pipelines
    return data.executions(pipelines, limit), pipelines.where


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def steps(key: str, _ctx: Context, execution: str) -> pd.DataFrame:
    return data.steps(_ctx.resources.pipelines, execution)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def serving(key: str, _ctx: Context) -> data.Serving:
    return data.serving(_ctx.resources.endpoints, _ctx.config.sagemaker.endpoint_name)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def model_versions(key: str, _ctx: Context, serving_arn: str | None) -> pd.DataFrame:
    return data.model_versions(
        _ctx.resources.registry,
        _ctx.config.sagemaker.model_package_group,
        _ctx.resources.store,
        serving_arn,
    )


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def drift_history(key: str, _ctx: Context) -> data.DriftHistory:
    return data.drift_history(_ctx.resources.store, data.drift_prefix(_ctx.config))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def drift_violations(key: str, _ctx: Context, uri: str) -> pd.DataFrame:
    history = drift_history(key, _ctx)
    result = next(r for r in history.results if r.uri == uri)
    return data.violations(_ctx.resources.store, result)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def report(key: str, _ctx: Context, uri: str) -> bytes | None:
    return data.read_report(_ctx.resources.store, uri)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def prediction_dates(key: str, _ctx: Context) -> list[date] | None:
    return data.prediction_dates(
        _ctx.resources.warehouse, data.predictions_table(_ctx.config)
    )


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def prediction_summary(
    key: str, _ctx: Context, as_of: date, bins: int
) -> data.PredictionSummary:
    return data.prediction_summary(
        _ctx.resources.warehouse, data.predictions_table(_ctx.config), as_of, bins
    )


def status_badge(status: str | None) -> str:
    colour = {
        "Succeeded": "green",
        "Approved": "green",
        "Failed": "red",
        "Rejected": "red",
        "Executing": "blue",
        "PendingManualApproval": "orange",
        "Stopped": "gray",
    }.get(status or "", "gray")
    return f":{colour}-badge[{status or 'unknown'}]"


def table_height(rows: int, most: int) -> int:
    """Pixels that show ``rows`` rows (at most ``most``) without an inner scroll bar."""
    return 38 + 35 * max(1, min(rows, most))
