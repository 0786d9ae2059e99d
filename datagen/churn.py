"""A synthetic customer-churn world, shaped like a company's own tables.

Three sources, as they would land in Snowflake:
  CUSTOMERS       the CRM: sign-up, plan, region, age (sometimes missing), cancel date;
  TRANSACTIONS    POS terminals and the web shop: one row per purchase;
  SUPPORT_EVENTS  the support desk's logs: tickets with type, severity, resolution.

Churn is driven by a hidden risk (plan, acquisition channel, age, a noisy personal
factor) and leaves traces before it happens: purchases thin out and complaints pile up
in the weeks before a customer cancels. The signal is real but imperfect. Everything is
deterministic for a given seed and customer count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

HISTORY_START = date(2025, 1, 1)
HISTORY_END = date(2026, 6, 30)
_PLANS = np.array(["basic", "plus", "premium"])
_PLAN_FEES = np.array([19.0, 39.0, 69.0])
_REGIONS = np.array(["north", "south", "east", "west"])
_CHANNELS = np.array(["organic", "referral", "promo", "partner"])
_EVENT_TYPES = np.array(["complaint", "billing", "outage", "question"])


@dataclass(frozen=True)
class DemoTables:
    customers: pd.DataFrame
    transactions: pd.DataFrame
    support_events: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {
            "CUSTOMERS": self.customers,
            "TRANSACTIONS": self.transactions,
            "SUPPORT_EVENTS": self.support_events,
        }


def generate(customers: int, seed: int = 7) -> DemoTables:
    """Generate the three tables for ``customers`` customers."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    rng = np.random.default_rng(seed)
    start = np.datetime64(HISTORY_START, "D")
    end = np.datetime64(HISTORY_END, "D")
    n = customers

    ids = np.arange(1, n + 1, dtype=np.int64)
    signup = np.datetime64("2022-01-01", "D") + rng.integers(
        0, (end - 60 - np.datetime64("2022-01-01", "D")).astype(int), n
    )
    plan_idx = rng.choice(3, n, p=[0.5, 0.35, 0.15])
    region_idx = rng.choice(4, n, p=[0.3, 0.25, 0.25, 0.2])
    channel_idx = rng.choice(4, n, p=[0.45, 0.2, 0.25, 0.1])
    age = rng.normal(42, 13, n).clip(18, 90).round()
    support_propensity = rng.normal(0, 1, n)

    risk = (
        0.55 * (plan_idx == 0)
        - 0.45 * (plan_idx == 2)
        + 0.6 * (channel_idx == 2)
        - 0.012 * (age - 42)
        + 0.5 * support_propensity
        + rng.normal(0, 0.7, n)
    )
    hazard_per_day = 0.0011 * np.exp(risk)
    observed_from = np.maximum(signup, start)
    days_to_cancel = rng.exponential(1.0 / hazard_per_day).astype(np.int64)
    cancel = observed_from + days_to_cancel
    has_cancel = cancel <= end

    customers_df = pd.DataFrame(
        {
            "CUSTOMER_ID": ids,
            "SIGNUP_DATE": signup.astype("datetime64[ns]"),
            "PLAN": _PLANS[plan_idx],
            "REGION": _REGIONS[region_idx],
            "AGE": pd.array(np.where(rng.random(n) < 0.03, np.nan, age), dtype="Int64"),
            "MONTHLY_FEE": _PLAN_FEES[plan_idx],
            "ACQUISITION_CHANNEL": _CHANNELS[channel_idx],
            "CANCEL_DATE": pd.Series(
                np.where(has_cancel, cancel, np.datetime64("NaT"))
            ).astype("datetime64[ns]"),
        }
    )
    active_end = np.where(has_cancel, cancel, end + 1)
    transactions = _transactions(
        rng, ids, plan_idx, observed_from, active_end, has_cancel, cancel
    )
    support = _support_events(
        rng, ids, support_propensity, observed_from, active_end, has_cancel, cancel
    )
    return DemoTables(customers_df, transactions, support)


def _transactions(
    rng, ids, plan_idx, active_from, active_end, has_cancel, cancel
) -> pd.DataFrame:
    rate = np.array([0.03, 0.045, 0.06])[plan_idx] * rng.lognormal(0, 0.35, len(ids))
    days_active = (active_end - active_from).astype(np.int64).clip(min=0)
    counts = rng.poisson(rate * days_active)
    owner = np.repeat(np.arange(len(ids)), counts)
    offsets = (rng.random(owner.size) * days_active[owner]).astype(np.int64)
    day = active_from[owner] + offsets
    # Disengagement: in the 120 days before a cancellation purchases thin out, the
    # more so the closer the cancellation.
    days_left = (cancel[owner] - day).astype(np.int64)
    before_cancel = has_cancel[owner] & (days_left <= 120)
    keep_probability = np.clip(0.15 + 0.7 * days_left / 120, 0.15, 1.0)
    keep = ~before_cancel | (rng.random(owner.size) < keep_probability)
    owner, day = owner[keep], day[keep]
    seconds = rng.integers(8 * 3600, 21 * 3600, owner.size)
    timestamps = day.astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    amounts = np.round(
        rng.lognormal(3.2, 0.6, owner.size)
        * np.array([0.8, 1.0, 1.4])[plan_idx[owner]],
        2,
    )
    order = np.lexsort((timestamps, owner))
    return pd.DataFrame(
        {
            "TXN_ID": np.arange(1, owner.size + 1, dtype=np.int64),
            "CUSTOMER_ID": ids[owner[order]],
            "TXN_TS": timestamps[order].astype("datetime64[ns]"),
            "AMOUNT": amounts[order],
            "STORE_ID": rng.integers(1, 250, owner.size),
            "CHANNEL": np.where(rng.random(owner.size) < 0.3, "online", "pos"),
        }
    )


def _support_events(
    rng, ids, propensity, active_from, active_end, has_cancel, cancel
) -> pd.DataFrame:
    days_active = (active_end - active_from).astype(np.int64).clip(min=0)
    base = rng.poisson(0.004 * np.exp(0.7 * propensity) * days_active)
    owner = np.repeat(np.arange(len(ids)), base)
    day = active_from[owner] + (rng.random(owner.size) * days_active[owner]).astype(
        np.int64
    )
    event_type = rng.choice(4, owner.size, p=[0.25, 0.3, 0.15, 0.3])
    # Frustration before leaving: extra complaints in the 100 days before cancelling.
    extra = rng.poisson(np.where(has_cancel, 1.4, 0.0))
    extra_owner = np.repeat(np.arange(len(ids)), extra)
    extra_day = cancel[extra_owner] - rng.integers(1, 101, extra_owner.size)
    valid = extra_day >= active_from[extra_owner]
    owner = np.concatenate([owner, extra_owner[valid]])
    day = np.concatenate([day, extra_day[valid]])
    event_type = np.concatenate([event_type, np.zeros(int(valid.sum()), dtype=int)])
    severity = np.where(
        event_type == 0, rng.integers(2, 4, owner.size), rng.integers(1, 3, owner.size)
    )
    timestamps = day.astype("datetime64[s]") + rng.integers(
        0, 86400, owner.size
    ).astype("timedelta64[s]")
    order = np.lexsort((timestamps, owner))
    return pd.DataFrame(
        {
            "EVENT_ID": np.arange(1, owner.size + 1, dtype=np.int64),
            "CUSTOMER_ID": ids[owner[order]],
            "EVENT_TS": timestamps[order].astype("datetime64[ns]"),
            "EVENT_TYPE": _EVENT_TYPES[event_type[order]],
            "SEVERITY": severity[order].astype(np.int64),
            "RESOLVED": rng.random(owner.size) < 0.85,
        }
    )
