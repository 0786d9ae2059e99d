"""The drift check's judgement: a batch from the training distribution raises no
violation; batches with shifted, missing, mistyped or out-of-range values raise the
matching ones; the Model Monitor files have their documented fields.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import load_feature_set
from monitoring import formats
from monitoring.baseline import Baseline, build_baseline, column_statistics
from monitoring.drift import InsufficientData, compare, psi, sketch_cdf
from processing.extract import query_features
from stack.config import MonitoringConfig
from stack.warehouse import EmbeddedWarehouse

FEATURE_SET = load_feature_set("churn")
SCHEMA = FEATURE_SET.schema
SETTINGS = MonitoringConfig()


@pytest.fixture(scope="module")
def features(seeded_snowflake_dir: Path) -> pd.DataFrame:
    warehouse = EmbeddedWarehouse(seeded_snowflake_dir, "MLOPS", "CHURN")
    with warehouse.connect() as conn:
        frame = query_features(
            conn, FEATURE_SET.sql, {"as_of": "2026-03-31", "label_window_days": 90}
        )
    for name in SCHEMA.feature_names:
        frame[name] = pd.to_numeric(frame[name])
    return frame


@pytest.fixture(scope="module")
def halves(features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training half and a held-out half of the same distribution, each with
    scores drawn from one distribution.
    """
    rng = np.random.default_rng(3)
    order = rng.permutation(len(features))
    frame = features[SCHEMA.feature_names].copy()
    frame["prediction"] = rng.beta(2, 5, size=len(frame))
    half = len(frame) // 2
    train = frame.iloc[order[:half]].reset_index(drop=True)
    held_out = frame.iloc[order[half:]].reset_index(drop=True)
    return train, held_out


@pytest.fixture(scope="module")
def baseline(halves: tuple[pd.DataFrame, pd.DataFrame]) -> Baseline:
    train, _ = halves
    return build_baseline(train, SCHEMA, train["prediction"].to_numpy())


def checks(result) -> set[tuple[str, str]]:
    return {
        (v.get("feature_name", v.get("metric_name")), v["constraint_check_type"])
        for v in result.violations
    }


def test_a_batch_from_the_training_distribution_raises_no_violation(
    baseline: Baseline, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, held_out = halves
    result = compare(held_out, baseline, SETTINGS)
    assert result.violations == []
    assert result.rows == len(held_out)
    assert len(result.features) == len(SCHEMA.feature_names)
    assert max(f.psi for f in result.features) < SETTINGS.psi_threshold / 2
    assert result.prediction is not None and result.prediction["psi"] < 0.05


def test_shifted_distributions_raise_drift_violations_by_feature(
    baseline: Baseline, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, held_out = halves
    shifted = held_out.copy()
    # customers spend less and complain more; the model scores everyone higher
    shifted["spend_90d"] = shifted["spend_90d"] * 0.6
    shifted["txn_count_90d"] = (shifted["txn_count_90d"] * 0.6).round()
    shifted["complaints_90d"] = shifted["complaints_90d"] + 1
    shifted["prediction"] = np.clip(shifted["prediction"] + 0.3, 0, 1)
    result = compare(shifted, baseline, SETTINGS)
    found = checks(result)
    assert ("spend_90d", "baseline_drift_check") in found
    assert ("txn_count_90d", "baseline_drift_check") in found
    assert ("complaints_90d", "baseline_drift_check") in found
    assert ("prediction", "baseline_drift_check") in found
    untouched = {f.name: f for f in result.features}["region_code"]
    assert not untouched.drifted
    assert {f.name for f in result.features if f.drifted} == {
        "spend_90d",
        "txn_count_90d",
        "complaints_90d",
    }
    formats.check({"violations": result.violations}, formats.VIOLATIONS, "violations")


def test_missing_values_wrong_types_and_out_of_range_values_are_violations(
    baseline: Baseline, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, held_out = halves
    bad = held_out.copy().astype({"tenure_days": object, "plan_tier": float})
    rows = len(bad)
    bad.loc[: rows // 4, "monthly_fee"] = np.nan  # a non-nullable column, 25% missing
    bad.loc[:9, "tenure_days"] = "twelve"  # not numbers
    bad.loc[:19, "plan_tier"] = 2.5  # not whole numbers for an integral feature
    bad.loc[: rows // 10, "age"] = 250  # outside the training range
    bad.loc[:29, "spend_30d"] = -5.0  # negative where training never was
    bad = bad.drop(columns=["unresolved_tickets"]).assign(coupon_code=1)
    found = checks(compare(bad, baseline, SETTINGS))
    assert ("monthly_fee", "completeness_check") in found
    assert ("tenure_days", "data_type_check") in found
    assert ("plan_tier", "data_type_check") in found
    assert ("age", "range_check") in found
    assert ("spend_30d", "range_check") in found
    assert ("unresolved_tickets", "missing_column_check") in found
    assert ("coupon_code", "extra_column_check") in found
    # what was not touched stays clean
    assert not {name for name, _ in found} & {"region_code", "tickets_90d"}


def test_thresholds_come_from_the_configuration(
    baseline: Baseline, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, held_out = halves
    shifted = held_out.assign(spend_90d=held_out["spend_90d"] * 0.9)
    loose = compare(shifted, baseline, SETTINGS)
    strict = compare(
        shifted,
        baseline,
        SETTINGS.model_copy(
            update={"psi_threshold": 0.005, "ks_statistic_threshold": 0.02}
        ),
    )
    assert ("spend_90d", "baseline_drift_check") not in checks(loose)
    assert ("spend_90d", "baseline_drift_check") in checks(strict)


def test_too_few_rows_are_not_judged(baseline: Baseline, halves) -> None:
    _, held_out = halves
    with pytest.raises(InsufficientData, match="monitoring.min_rows"):
        compare(held_out.head(10), baseline, SETTINGS)


def test_psi_and_ks_read_a_multi_level_sketch_by_its_weights() -> None:
    """A Model Monitor sketch has several levels; an item at level h weighs 2**h."""
    feature = column_statistics("x", np.arange(1000, dtype=float), "Fractional")
    levels = feature["numerical_statistics"]["distribution"]["kll"]["sketch"]
    # the same distribution as level 0 (every value) and level 1 (every other one)
    levels["data"] = [list(range(0, 1000, 2)), list(range(1, 1000, 4))]
    items, cumulative = sketch_cdf(feature)
    assert cumulative[-1] == pytest.approx(1.0)
    assert np.interp(500, items, cumulative) == pytest.approx(0.5, abs=0.01)
    same = np.sort(np.random.default_rng(1).uniform(0, 1000, 5000))
    shifted = np.sort(np.random.default_rng(1).uniform(300, 1300, 5000))
    assert psi(items, cumulative, same) < 0.02
    assert psi(items, cumulative, shifted) > 0.5


def test_the_baseline_files_have_model_monitors_documented_fields(
    baseline: Baseline, tmp_path: Path
) -> None:
    formats.check(baseline.statistics, formats.STATISTICS, "statistics.json")
    formats.check(baseline.constraints, formats.CONSTRAINTS, "constraints.json")
    entry = baseline.feature("age")
    assert entry is not None and entry["inferred_type"] == "Integral"
    numbers = entry["numerical_statistics"]
    assert numbers["common"]["num_missing"] > 0  # age is missing for some customers
    assert (
        sum(b["count"] for b in numbers["distribution"]["kll"]["buckets"])
        == (numbers["common"]["num_present"])
    )
    assert baseline.constraint("age")["completeness"] < 1.0
    assert baseline.constraint("monthly_fee")["completeness"] == 1.0
    assert baseline.constraint("spend_trend") is not None
    baseline.write(tmp_path)
    again = Baseline.read(tmp_path)
    assert again.statistics == baseline.statistics
    assert again.prediction == baseline.prediction


@pytest.mark.parametrize(
    ("document", "mutate", "message"),
    [
        ("statistics", lambda d: d["dataset"].pop("item_count"), "item_count"),
        (
            "statistics",
            lambda d: d["features"][0].update(inferred_type="Decimal"),
            "features/0/inferred_type",
        ),
        (
            "statistics",
            lambda d: d["features"][1]["numerical_statistics"]["common"].pop(
                "num_missing"
            ),
            "num_missing",
        ),
        (
            "constraints",
            lambda d: d["features"][0].update(completeness=1.5),
            "completeness",
        ),
        (
            "constraints",
            lambda d: d["monitoring_config"].update(evaluate_constraints="yes"),
            "evaluate_constraints",
        ),
    ],
)
def test_a_malformed_baseline_is_refused_by_field(
    baseline: Baseline, document: str, mutate, message: str
) -> None:
    statistics = copy.deepcopy(baseline.statistics)
    constraints = copy.deepcopy(baseline.constraints)
    mutate(statistics if document == "statistics" else constraints)
    with pytest.raises(formats.FormatError, match=message):
        Baseline.from_documents(statistics, constraints)


def test_a_violation_without_a_description_or_of_an_unknown_type_is_refused() -> None:
    with pytest.raises(formats.FormatError, match="description"):
        formats.check(
            {
                "violations": [
                    {"feature_name": "a", "constraint_check_type": "data_type_check"}
                ]
            },
            formats.VIOLATIONS,
            "violations",
        )
    with pytest.raises(formats.FormatError, match="constraint_check_type"):
        formats.check(
            {
                "violations": [
                    {
                        "feature_name": "a",
                        "constraint_check_type": "vibes_check",
                        "description": "x",
                    }
                ]
            },
            formats.VIOLATIONS,
            "violations",
        )
