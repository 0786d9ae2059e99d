"""A training job of several instances runs locally as on SageMaker: a process per host
from the staged image, each with its resourceconfig.json, the hosts finding each other
by name; they train one model together on their shares of the rows, and only the
leader writes it.

The data is the README's demo (100,000 customers, seed 7) through the Extract's own
streaming code; the single-host model is trained in-process on all the rows.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from datagen.seed import ensure_demo_data
from features import load_feature_set
from pipelines.image import stage_image
from pipelines.local_jobs import (
    Container,
    JobFailed,
    Platform,
    bwrap_works,
    run_training_job,
)
from processing.stream import SPLITS, SplitWriters, stream_features
from stack.objectstore import LocalObjectStore
from stack.warehouse import EmbeddedWarehouse
from tests.conftest import PROJECT_ROOT, run_cli
from training.distributed import share
from training.hyperparameters import DEFAULTS
from training.train import share_summary, train_model

SCHEMA = load_feature_set("churn").schema
DEMO_CUSTOMERS = 100_000
FEATURES = "s3://mlops-local/churn/features"
ISOLATIONS = [
    "none",
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(
            not bwrap_works(), reason="needs bubblewrap (.ci/run installs it)"
        ),
    ),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo's features, split as Extract splits them: frames, and the train and
    validation splits in a local object store (one file each, as one Extract
    instance writes them).
    """
    root = tmp_path_factory.mktemp("demo")
    warehouse = EmbeddedWarehouse(root / "snowflake", "MLOPS", "CHURN")
    ensure_demo_data(warehouse, DEMO_CUSTOMERS, 7)
    folders = {s: root / "features" / s for s in SPLITS}
    feature_set = load_feature_set("churn")
    with warehouse.connect() as conn:
        stream_features(
            conn,
            feature_set.sql,
            {"as_of": "2026-03-31", "label_window_days": 90},
            SCHEMA,
            SplitWriters(folders, "part-algo-1", 100_000),
        )
    store = LocalObjectStore(root / "s3")
    for split in ("train", "validation"):
        store.upload_dir(folders[split], f"{FEATURES}/{split}")
    frames = {s: pd.read_parquet(folders[s]) for s in SPLITS}
    return {"store": store, **frames}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return stage_image(tmp_path_factory.mktemp("images"), PROJECT_ROOT / "Dockerfile")


def training_request(count: int, **hyperparameters: str) -> dict[str, Any]:
    """A resolved CreateTrainingJob request as the pipeline's Train step makes it."""
    return {
        "AlgorithmSpecification": {
            "TrainingImage": "local/img",
            "TrainingInputMode": "File",
        },
        "HyperParameters": {"num_round": "300", **hyperparameters},
        "InputDataConfig": [
            {
                "ChannelName": split,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataDistributionType": "FullyReplicated",
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{FEATURES}/{split}",
                    }
                },
                "InputMode": "File",
            }
            for split in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://mlops-local/churn/model"},
        "ResourceConfig": {
            "InstanceCount": count,
            "InstanceType": "ml.m5.xlarge",
            "VolumeSizeInGB": 30,
        },
        "RoleArn": "arn:aws:iam::000000000000:role/r",
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Environment": {"OMP_NUM_THREADS": "1"},
    }


def run(
    demo: dict[str, Any], image: Any, tmp_path: Path, isolation: str, request: dict
) -> tuple[Any, Path]:
    container = Container(image, Platform(shared=(tmp_path,), isolation=isolation))
    work_dir = tmp_path / "steps" / "Train"
    result = run_training_job(
        f"pipelines-{isolation}-train", request, work_dir, demo["store"], container
    )
    return result, work_dir


def archive(store: LocalObjectStore, uri: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(store.path_of(uri).read_bytes())) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def probabilities(booster: xgb.Booster, calibration: Any, frame: pd.DataFrame) -> Any:
    """Churn probabilities as serving computes them: the booster's score, calibrated."""
    matrix = xgb.DMatrix(
        SCHEMA.feature_matrix(frame), feature_names=SCHEMA.feature_names
    )
    return calibration.apply(booster.predict(matrix))


def from_archive(files: dict[str, bytes], frame: pd.DataFrame) -> Any:
    from inference.calibration import Calibration

    booster = xgb.Booster()
    booster.load_model(bytearray(files["model.json"]))
    calibration = Calibration.from_dict(json.loads(files["calibration.json"]))
    return probabilities(booster, calibration, frame)


def from_model(model: Any, frame: pd.DataFrame) -> Any:
    booster = model.booster[: model.best_iteration + 1]
    return probabilities(booster, model.calibration, frame)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_two_hosts_train_one_model_on_their_shares(demo, image, tmp_path, isolation):
    result, work_dir = run(demo, image, tmp_path, isolation, training_request(2))
    store = demo["store"]
    train, validation, test = demo["train"], demo["validation"], demo["test"]

    # each host read only its share: disjoint, together every row (counts and the
    # entity checksums add up), about half each
    notes = [
        json.loads(
            (work_dir / h / "opt/ml/output/data" / f"share-{h}.json").read_text()
        )
        for h in ("algo-1", "algo-2")
    ]
    assert [n["rank"] for n in notes] == [0, 1]
    for split, frame in (("train", train), ("validation", validation)):
        whole = share_summary(frame, SCHEMA.entity_id)
        rows = [n[f"{split}_rows"] for n in notes]
        assert sum(rows) == whole["rows"] and all(
            0.4 < r / sum(rows) < 0.6 for r in rows
        )
        checksum = sum(n[f"{split}_checksum"] for n in notes) % 2**64
        assert checksum == whole["checksum"]
    for host, note in zip(("algo-1", "algo-2"), notes, strict=True):
        log = (work_dir / host / "job.log").read_text()
        assert f"{note['train_rows']} train rows" in log
    # ... and the notes reach the job's output.tar.gz, as SageMaker aggregates them
    outputs = archive(
        store, f"s3://mlops-local/churn/model/{result.job_name}/output/output.tar.gz"
    )
    assert set(outputs) == {"share-algo-1.json", "share-algo-2.json"}

    # only the leader wrote the model, and it knows every host's rows: the counts
    # were all-reduced over the communicator
    assert not any((work_dir / "algo-2" / "opt/ml/model").iterdir())
    files = archive(store, result.properties["ModelArtifacts"]["S3ModelArtifacts"])
    assert set(files) == {
        "model.json",
        "calibration.json",
        "schema.json",
        "metadata.json",
    }
    metadata = json.loads(files["metadata.json"])
    assert metadata["train_rows"] == len(train)
    assert metadata["hosts"]["train_rows"] == [n["train_rows"] for n in notes]
    # the metrics lines come from the leader only
    assert "validation AUC" in (work_dir / "algo-1" / "job.log").read_text()
    assert "validation AUC" not in (work_dir / "algo-2" / "job.log").read_text()

    # one model trained together: as good as one host on every row (AUC within
    # 0.005), and much closer to it than what one host learns from its share alone
    hp = {**DEFAULTS, "num_round": 300}
    alone = train_model(train, validation, SCHEMA, hp, threads=1)
    one_share = train_model(
        share(train, SCHEMA.entity_id, 0, 2),
        share(validation, SCHEMA.entity_id, 0, 2),
        SCHEMA,
        hp,
        threads=1,
        calibration_data=validation,
    )
    labels = test[SCHEMA.label].to_numpy()
    together = from_archive(files, test)
    single, half = from_model(alone, test), from_model(one_share, test)
    auc_together = roc_auc_score(labels, together)
    auc_single = roc_auc_score(labels, single)
    auc_half = roc_auc_score(labels, half)
    gap_together = np.abs(together - single).mean()
    gap_half = np.abs(half - single).mean()
    print(
        f"test AUC: 1 host {auc_single:.4f}, 2 hosts {auc_together:.4f}, one share "
        f"alone {auc_half:.4f}; mean |p - p_1host|: 2 hosts {gap_together:.4f}, "
        f"one share alone {gap_half:.4f}"
    )
    assert abs(auc_together - auc_single) <= 0.005
    assert np.corrcoef(together, single)[0, 1] > 0.98
    assert gap_together < 0.02 and gap_together < gap_half


RESOLVE = """
import json, pathlib, socket
from training.contract import TrainingContract
c = TrainingContract.from_environment()
seen = {h: c.address_of(h) for h in c.hosts}
by_name = {h: socket.gethostbyname(h) for h in c.hosts} if not c.host_addresses else {}
out = c.output_data_dir / f"{c.current_host}.json"
out.write_text(json.dumps({"seen": seen, "by_name": by_name, "host": socket.gethostname()}))
"""


def custom(count: int, code: str) -> dict[str, Any]:
    request = training_request(count)
    request["InputDataConfig"] = []
    request["AlgorithmSpecification"]["ContainerEntrypoint"] = ["python", "-c", code]
    return request


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_hosts_resolve_each_other_by_name_on_addresses_of_their_own(
    image, tmp_path, isolation
):
    store = LocalObjectStore(tmp_path / "s3")
    container = Container(image, Platform(shared=(tmp_path,), isolation=isolation))
    seen = []
    for job in ("a", "b"):
        work_dir = tmp_path / job
        run_training_job(job, custom(3, RESOLVE), work_dir, store, container)
        notes = [
            json.loads((work_dir / h / "opt/ml/output/data" / f"{h}.json").read_text())
            for h in ("algo-1", "algo-2", "algo-3")
        ]
        # every host sees the same map, three distinct loopback addresses
        assert all(n["seen"] == notes[0]["seen"] for n in notes)
        addresses = list(notes[0]["seen"].values())
        assert len(set(addresses)) == 3
        assert all(a.startswith("127.") and a != "127.0.0.1" for a in addresses)
        if isolation == "bwrap":  # by the sandbox's /etc/hosts, as on SageMaker
            assert all(n["by_name"] == n["seen"] for n in notes)
            assert [n["host"] for n in notes] == ["algo-1", "algo-2", "algo-3"]
        seen.append(set(addresses))
    assert not seen[0] & seen[1]  # two jobs never share an address


FAIL_ON_ALGO_2 = """
import json, pathlib, sys, time
from training.contract import TrainingContract
c = TrainingContract.from_environment()
if c.current_host == "algo-2":
    c.fail("algo-2 could not read its share")
    sys.exit(1)
time.sleep(300)  # as a leader waiting for its peer in the tracker
"""


def test_one_failing_host_fails_the_job_at_once_and_stops_the_others(image, tmp_path):
    store = LocalObjectStore(tmp_path / "s3")
    container = Container(image, Platform(shared=(tmp_path,)))
    started = time.monotonic()
    with pytest.raises(JobFailed, match="^algo-2: algo-2 could not read its share"):
        run_training_job("f", custom(2, FAIL_ON_ALGO_2), tmp_path, store, container)
    assert time.monotonic() - started < 60


BOTH_WRITE = """
from training.contract import TrainingContract
c = TrainingContract.from_environment()
(c.model_dir / "model.json").write_text(c.current_host)
"""


def test_two_hosts_writing_the_same_model_file_fail_the_job(image, tmp_path):
    store = LocalObjectStore(tmp_path / "s3")
    container = Container(image, Platform(shared=(tmp_path,)))
    with pytest.raises(
        JobFailed, match="algo-1 and algo-2 both wrote model/model.json"
    ):
        run_training_job("c", custom(2, BOTH_WRITE), tmp_path, store, container)


# --- the pipeline parameter ---------------------------------------------------------


def test_train_runs_on_training_instance_count_hosts_one_by_default():
    from pipelines.definition import build_definition
    from stack.config import load_config

    definition = build_definition(load_config("local", environ={}))
    [parameter] = [
        p for p in definition["Parameters"] if p["Name"] == "TrainingInstanceCount"
    ]
    assert parameter == {
        "Name": "TrainingInstanceCount",
        "Type": "Integer",
        "DefaultValue": 1,
    }
    [train] = [s for s in definition["Steps"] if s["Name"] == "Train"]
    assert train["Arguments"]["ResourceConfig"]["InstanceCount"] == {
        "Get": "Parameters.TrainingInstanceCount"
    }


def test_the_parameters_bound_is_the_trainings():
    from pipelines.parameters import PARAMETERS
    from training.distributed import MAX_INSTANCE_COUNT

    assert PARAMETERS["TrainingInstanceCount"].maximum == MAX_INSTANCE_COUNT


@pytest.mark.parametrize(
    ("value", "reason"),
    [("0", "must be at least 1"), ("21", "must be at most 20"), ("2.5", "Integer")],
)
def test_a_bad_training_instance_count_exits_2_before_any_work(tmp_path, value, reason):
    state = tmp_path / "state"
    result = run_cli(
        "--param", f"TrainingInstanceCount={value}", "--state-dir", str(state)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: parameter TrainingInstanceCount=")
    assert reason in result.stderr
    assert not state.exists()
