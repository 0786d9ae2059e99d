"""The whole loop on the embedded stack, run as a user runs it: the CLI, twice."""

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stack.warehouse import EmbeddedWarehouse
from tests.conftest import PROJECT_ROOT, SMALL_CUSTOMERS, free_port, run_cli

pytestmark = pytest.mark.e2e
SENTINEL = "pw-sentinel-5b1e9"


@pytest.fixture
def state(tmp_path):
    folder = tmp_path / "state"
    yield folder
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.endpoint",
            "stop",
            "--state-dir",
            str(folder),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=60,
    )


def local_args(state, *extra: str) -> tuple[str, ...]:
    """A local run in ``state`` on the small demo data, with its own endpoint port."""
    return (
        "--state-dir",
        str(state),
        "--customers",
        str(SMALL_CUSTOMERS),
        "--port",
        str(free_port()),
        *extra,
    )


def predictions(folder):
    with EmbeddedWarehouse(folder / "snowflake", "MLOPS", "CHURN").connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT COUNT(*), COUNT(DISTINCT CUSTOMER_ID), MIN(SCORE), MAX(SCORE), "
            "COUNT(DISTINCT PIPELINE_EXECUTION_ID) FROM PREDICTIONS"
        )
        return cursor.fetchone()


def captured_rows(state, at_least, timeout=15.0):
    """The local endpoint's data capture of the last hours, once its workers have
    written ``at_least`` rows (they write every second).
    """
    from datetime import UTC, datetime, timedelta

    from monitoring.capture import read_capture
    from stack.objectstore import LocalObjectStore

    store = LocalObjectStore(state / "s3")
    prefix = "s3://mlops-local/churn/datacapture"
    end = datetime.now(UTC) + timedelta(minutes=1)
    deadline = time.monotonic() + timeout
    while True:
        frame = read_capture(
            store, prefix, "churn-endpoint", end - timedelta(hours=2), end
        )
        if len(frame) >= at_least or time.monotonic() > deadline:
            return frame
        time.sleep(0.2)


def execution_id(result) -> str:
    """The execution id in a run's summary."""
    return re.search(r"execution (\w+)\n", result.stdout).group(1)


def scores(folder):
    with EmbeddedWarehouse(folder / "snowflake", "MLOPS", "CHURN").connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT SCORE FROM PREDICTIONS")
        return [row[0] for row in cursor.fetchall()]


def test_the_whole_loop_twice_then_its_failures(state):
    port = free_port()
    args = (
        "--state-dir",
        str(state),
        "--customers",
        str(SMALL_CUSTOMERS),
        "--port",
        str(port),
    )

    # a password in the environment (unused by the embedded Snowflake) must not leak
    first = run_cli(*args, env={"MLOPS_SNOWFLAKE__PASSWORD": SENTINEL})
    assert first.returncode == 0, first.stdout + first.stderr
    assert SENTINEL not in first.stdout + first.stderr
    assert first.stdout.strip().endswith("Succeeded")
    auc = float(re.search(r"Test metrics: auc (\d\.\d+)", first.stdout).group(1))
    assert auc >= 0.7
    assert "Gate: register by the absolute rule only (no Approved champion" in (
        first.stdout
    )
    assert "model-package/churn-models/1 (version 1, Approved)" in first.stdout
    first_report = re.search(r"Evaluation report: (.+)\n", first.stdout).group(1)
    assert first_report == str(
        state.resolve() / "s3/mlops-local/churn" / execution_id(first) / "evaluation"
        / "report.html"
    )  # fmt: skip
    assert "<html" in Path(first_report).read_text()[:200].lower()
    assert f"at http://127.0.0.1:{port} (/ping 200)" in first.stdout
    rows, customers, low, high, executions = predictions(state)
    assert rows == customers > 1000 and 0 <= low < high <= 1 and executions == 1
    # the endpoint captured what the WriteBack step sent it, as SageMaker would
    captured = captured_rows(state, rows)
    assert captured.attrs["undecodable"] == 0 and len(captured) >= rows
    assert set(scores(state)) <= set(captured["prediction"])

    second = run_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Found demo data" in second.stdout
    for step in ("Extract", "Train", "Evaluate"):  # same arguments: SageMaker's cache
        assert f"[cache] {step} reused from execution {execution_id(first)}" in (
            second.stdout
        )
    # the cached Evaluate's report is the one the first execution wrote
    assert f"Evaluation report: {first_report}\n" in second.stdout
    # the Gate reruns (the champion may have changed): the same model against
    # version 1, the champion now, on the same split
    assert "[cache] Gate reused" not in second.stdout
    assert "[ ok ] Gate" in second.stdout
    assert (
        f"Gate: register by the champion rule: test AUC {auc:.4f} vs champion "
        f"version 1's {auc:.4f}" in second.stdout
    )
    assert "(version 2, Approved)" in second.stdout
    assert predictions(state)[:2] == (rows, customers)  # one current row per customer

    # the endpoint outlives the command, serving the second model
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
        assert response.status == 200

    # the write-back command finds nothing new: the WriteBack step scored every
    # customer with the model the endpoint serves (recorded by default)
    command = subprocess.run(
        [sys.executable, "-m", "snowflake.sagemaker_predictions", "writeback",
         "--env", "local"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLOPS_STATE_DIR": str(state),
             "MLOPS_LOCAL_ENDPOINT__PORT": str(port)},
    )  # fmt: skip
    assert command.returncode == 0, command.stderr
    assert (
        f": 0 new or changed scored in 0 endpoint calls; 0 inserted, 0 updated, {rows:,} unchanged"
        in command.stdout
    )

    # no file the run wrote (logs, records, MLflow's store, DuckDB files) holds it
    leaks = [
        p
        for p in state.rglob("*")
        if p.is_file() and SENTINEL.encode() in p.read_bytes()
    ]
    assert leaks == []

    # what ran is exactly the definition --upsert would send for this configuration
    executed = sorted((state / "executions").glob("*/definition.json"))
    printed = run_cli("--definition", *args)
    assert printed.returncode == 0, printed.stderr
    for path in executed:
        assert json.loads(path.read_text()) == json.loads(printed.stdout)

    # The failures, on the same state (Extract, Train and Evaluate come from the cache,
    # so each costs only the steps that differ).
    # 1. A gate that refuses: exit 1 naming the step and the rule; nothing registered.
    refused = run_cli(*args, "--param", "AucThreshold=0.99")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert re.match(
        r"Failed: step AucTooLow: The model was not registered\. Decided by the "
        r"absolute rule: test AUC 0\.\d+ is below the threshold 0\.9900",
        refused.stdout.strip().splitlines()[-1],
    )
    versions = state / "registry" / "churn-models"
    assert (versions / "2.json").exists() and not (versions / "3.json").exists()

    # 2. A PREDICTIONS table of another shape: the WriteBack step fails, naming it,
    # after Deploy succeeded, and writes nothing.
    with EmbeddedWarehouse(state / "snowflake", "MLOPS", "CHURN").connect() as conn:
        cursor = conn.cursor()
        cursor.execute("DROP TABLE PREDICTIONS")
        cursor.execute("CREATE TABLE PREDICTIONS (SOMETHING_ELSE VARCHAR)")
    broken = run_cli(*args)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.strip().splitlines()
    assert lines[-1].startswith("Failed: step WriteBack: ")
    assert "table PREDICTIONS exists without the column(s) CUSTOMER_ID" in lines[-1]
    assert any(line.startswith("  Deploy          Succeeded") for line in lines)
    with EmbeddedWarehouse(state / "snowflake", "MLOPS", "CHURN").connect() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM PREDICTIONS")
        assert cursor.fetchone()[0] == 0


def test_two_extract_workers_split_the_rows_between_them(state):
    """ProcessingInstanceCount=2: two workers, disjoint shards, every source row once."""
    import pandas as pd

    from features import load_feature_set
    from processing.extract import query_features

    result = run_cli(
        *local_args(state, "--no-writeback", "--param", "ProcessingInstanceCount=2")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = (state / "executions").glob("*/execution.json")
    parameters = json.loads(record.read_text())["parameters"]
    step = record.parent / "steps" / "Extract"
    parts = sorted(step.glob("algo-*/opt/ml/processing/output/*/*.parquet"))
    by_worker = {
        host: pd.concat(
            [
                pd.read_parquet(p)["customer_id"]
                for p in parts
                if p.relative_to(step).parts[0] == host
            ]
        )
        for host in ("algo-1", "algo-2")
    }
    assert {p.relative_to(step).parts[0] for p in parts} == {"algo-1", "algo-2"}
    one, two = (set(ids) for ids in by_worker.values())
    assert one and two and not one & two

    # the oracle: the feature query itself, run once over the whole population
    with EmbeddedWarehouse(state / "snowflake", "MLOPS", "CHURN").connect() as conn:
        source = query_features(
            conn,
            load_feature_set("churn").sql,
            {
                "as_of": parameters["AsOfDate"],
                "label_window_days": parameters["LabelWindowDays"],
            },
        )["customer_id"]
    extracted = pd.concat(by_worker.values())
    assert len(extracted) == len(source) and set(extracted) == set(source)
