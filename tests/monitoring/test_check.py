"""``python -m monitoring check`` on the embedded stack: the serving model's registered
baseline, the scores in PREDICTIONS with their features recomputed, AUC decay once
labels have arrived, the files it publishes, and its exit codes.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import load_feature_set
from monitoring import check, formats
from monitoring.baseline import Baseline, build_baseline
from processing.extract import query_features
from snowflake.sagemaker_predictions.templates import predictions_ddl
from stack.config import Config, load_config
from stack.resources import build_resources
from tests.conftest import SMALL_CUSTOMERS, free_port

FEATURE_SET = load_feature_set("churn")
SCHEMA = FEATURE_SET.schema
TRAINED_AS_OF = "2026-03-31"  # labels complete by 2026-06-29 (90 days)
LATER_AS_OF = "2026-06-30"  # labels not in yet (monitoring.labels_through)


@pytest.fixture
def config(tmp_path: Path, seeded_snowflake_dir: Path, monkeypatch) -> Config:
    state = tmp_path / "state"
    shutil.copytree(seeded_snowflake_dir, state / "snowflake")
    monkeypatch.setenv("MLOPS_STATE_DIR", str(state))
    monkeypatch.setenv("MLOPS_LOCAL_ENDPOINT__PORT", str(free_port()))
    monkeypatch.setenv("MLOPS_DEMO__CUSTOMERS", str(SMALL_CUSTOMERS))
    return load_config("local")


def features_at(resources, as_of: str) -> pd.DataFrame:
    with resources.warehouse.connect() as conn:
        frame = query_features(
            conn, FEATURE_SET.sql, {"as_of": as_of, "label_window_days": 90}
        )
    for name in (*SCHEMA.feature_names, SCHEMA.label):
        frame[name] = pd.to_numeric(frame[name])
    return frame


def good_scores(frame: pd.DataFrame) -> np.ndarray:
    """Scores that rank churners first (AUC near 1)."""
    noise = np.random.default_rng(5).uniform(0, 0.5, len(frame))
    return np.clip(frame[SCHEMA.label].to_numpy() * 0.5 + noise, 0, 1)


def register_model(resources, trained: pd.DataFrame, scores: np.ndarray) -> str:
    baseline = build_baseline(trained, SCHEMA, scores)
    folder = resources.config.state_dir / "baseline"
    baseline.write(folder)
    prefix = f"{resources.config.artifact_root}/exec-1/baseline"
    resources.store.upload_dir(folder, prefix)
    package = resources.registry.register(
        {
            "ModelPackageGroupName": resources.config.sagemaker.model_package_group,
            "InferenceSpecification": {
                "Containers": [
                    {"Image": "local/img", "ModelDataUrl": "s3://models/model"}
                ]
            },
            "ModelApprovalStatus": "Approved",
            "CustomerMetadataProperties": {
                "test_auc": "0.85",
                "label_window_days": "90",
                "as_of_date": TRAINED_AS_OF,
            },
            "DriftCheckBaselines": {
                "ModelDataQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": f"{prefix}/statistics.json",
                    },
                    "Constraints": {
                        "ContentType": "application/json",
                        "S3Uri": f"{prefix}/constraints.json",
                    },
                }
            },
        }
    )
    return package.arn


def write_predictions(
    resources, frame: pd.DataFrame, as_of: str, scores: np.ndarray, arn: str
) -> None:
    table = resources.config.writeback.table
    rows = pd.DataFrame(
        {
            "CUSTOMER_ID": frame[SCHEMA.entity_id].astype("int64"),
            "AS_OF_DATE": date.fromisoformat(as_of),
            "SCORE": scores,
            "MODEL_PACKAGE_ARN": arn,
            "PIPELINE_EXECUTION_ID": "exec-1",
            "FEATURES_HASH": "h",
            "SCORED_AT": pd.Timestamp(datetime.now(UTC).replace(tzinfo=None)),
        }
    )
    with resources.warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(predictions_ddl(table, "CUSTOMER_ID", "NUMBER(38,0)"))
        cursor.execute(f"DELETE FROM {table} WHERE AS_OF_DATE = %s", (as_of,))
        resources.warehouse.write_pandas(conn, rows, table)


def run(*argv: str) -> int:
    return check.main(["--env", "local", *argv])


def published(config: Config) -> list[dict]:
    root = config.state_dir / "s3" / "mlops-local" / "churn" / "monitoring"
    return [
        json.loads(p.read_text())
        for p in sorted((root / config.sagemaker.endpoint_name).glob("*/drift.json"))
    ]


def test_scores_of_the_training_distribution_with_good_labels_pass(
    config: Config, tmp_path: Path, capsys
) -> None:
    resources = build_resources(config)
    trained = features_at(resources, TRAINED_AS_OF)
    scores = good_scores(trained)
    arn = register_model(resources, trained, scores)
    write_predictions(resources, trained, TRAINED_AS_OF, scores, arn)

    output = tmp_path / "out"
    code = run("--source", "predictions", "--output-dir", str(output))
    printed = capsys.readouterr().out
    assert code == check.EXIT_OK, printed
    drift = json.loads((output / "drift.json").read_text())
    assert drift["rows"] == len(trained)
    assert drift["violations"] == 0
    assert drift["window"] == {"as_of": TRAINED_AS_OF}
    assert drift["model_package_arn"] == arn
    assert drift["performance"]["as_of_dates"] == [TRAINED_AS_OF]
    assert drift["performance"]["auc"] > 0.95
    assert drift["performance"]["labelled_rows"] == len(trained)
    violations = json.loads((output / "constraint_violations.json").read_text())
    assert violations == {"violations": []}
    formats.check(
        json.loads((output / "statistics.json").read_text()),
        formats.STATISTICS,
        "statistics.json",
    )
    assert "No violations" in (output / "report.html").read_text()
    assert [d["checked_at"] for d in published(config)] == [drift["checked_at"]]
    # where to read it: the published copy, as a file in the local object store
    report = printed.splitlines()[-1].split("report: ")[1]
    folder = drift["checked_at"].replace(":", "-")
    assert report.endswith(
        f"/monitoring/{config.sagemaker.endpoint_name}/{folder}/report.html"
    )
    assert not report.startswith("s3://") and Path(report).is_file()


def test_auc_decay_on_newly_labelled_rows_and_later_drift_are_violations(
    config: Config, tmp_path: Path, capsys
) -> None:
    resources = build_resources(config)
    trained = features_at(resources, TRAINED_AS_OF)
    arn = register_model(resources, trained, good_scores(trained))
    # the model's scores turned into noise on the rows whose labels have arrived
    noise = np.random.default_rng(9).uniform(0, 1, len(trained))
    write_predictions(resources, trained, TRAINED_AS_OF, noise, arn)
    later = features_at(resources, LATER_AS_OF)
    write_predictions(resources, later, LATER_AS_OF, good_scores(later), arn)

    output = tmp_path / "out"
    code = run("--source", "predictions", "--output-dir", str(output))
    assert code == check.EXIT_VIOLATIONS
    drift = json.loads((output / "drift.json").read_text())
    # the newest scored date is judged for drift; the newest labelled one for AUC
    assert drift["window"] == {"as_of": LATER_AS_OF}
    assert drift["performance"]["as_of_dates"] == [TRAINED_AS_OF]
    assert drift["performance"]["auc"] < 0.6
    violations = json.loads((output / "constraint_violations.json").read_text())
    formats.check(violations, formats.VIOLATIONS, "constraint_violations.json")
    kinds = {
        (v.get("feature_name") or v.get("metric_name"), v["constraint_check_type"])
        for v in violations["violations"]
    }
    assert ("auc", "LessThanThreshold") in kinds
    # three months on, customers have longer tenures than any the model saw
    assert ("tenure_days", "range_check") in kinds
    assert drift["violations"] == len(violations["violations"])
    printed = capsys.readouterr().out
    assert "LessThanThreshold: auc" in printed
    report = (output / "report.html").read_text()
    assert "violation(s)" in report and "tenure_days" in report

    # --exit-zero: the same findings, exit 0 (a pipeline step branches on drift.json)
    assert run("--source", "predictions", "--exit-zero", "--no-publish") == 0


def test_nothing_to_judge_exits_2_with_the_reason(
    config: Config, tmp_path: Path, capsys
) -> None:
    assert run("--source", "predictions") == check.EXIT_UNJUDGED
    assert "no model to check" in capsys.readouterr().err

    resources = build_resources(config)
    trained = features_at(resources, TRAINED_AS_OF)
    register_model(resources, trained, good_scores(trained))
    assert run("--source", "predictions") == check.EXIT_UNJUDGED
    assert "no PREDICTIONS table" in capsys.readouterr().err

    assert run("--data", str(tmp_path / "absent.parquet")) == check.EXIT_UNJUDGED
    assert "no such file" in capsys.readouterr().err

    tiny = tmp_path / "tiny.csv"
    trained.head(5)[SCHEMA.feature_names].to_csv(tiny, index=False)
    assert run("--data", str(tiny)) == check.EXIT_UNJUDGED
    assert "monitoring.min_rows" in capsys.readouterr().err
    assert published(config) == []

    # --state-dir names another state folder, whose registry has no model
    elsewhere = ["--state-dir", str(tmp_path / "elsewhere"), "--data", str(tiny)]
    assert run(*elsewhere) == check.EXIT_UNJUDGED
    assert "no model to check" in capsys.readouterr().err


def test_a_file_is_checked_against_a_baseline_folder(
    config: Config, tmp_path: Path
) -> None:
    resources = build_resources(config)
    trained = features_at(resources, TRAINED_AS_OF)
    register_model(resources, trained, good_scores(trained))
    folder = tmp_path / "baseline"
    Baseline.read(config.state_dir / "baseline").write(folder)
    batch = tmp_path / "batch.parquet"
    trained[SCHEMA.feature_names].assign(spend_90d=trained["spend_90d"] * 3).to_parquet(
        batch
    )
    output = tmp_path / "out"
    code = run(
        "--data", str(batch), "--baseline-dir", str(folder), "--output-dir", str(output)
    )
    assert code == check.EXIT_VIOLATIONS
    drift = json.loads((output / "drift.json").read_text())
    assert [f["name"] for f in drift["features"] if f["drifted"]] == ["spend_90d"]
    assert drift["source"] == "file"
