"""Data capture keeps a bounded amount: a total size and an age (issue 21)."""

import itertools
import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from inference import capture as capture_module
from inference.capture import (
    DEFAULT_MAX_MB,
    DEFAULT_RETENTION_HOURS,
    CaptureBounds,
    CaptureSettings,
    CaptureWriter,
    sweep_capture,
)
from inference.supervisor import Generation, _spawn
from inference.worker import main as worker_main
from stack.config import ConfigError, load_config

CONFIG = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://bucket/datacapture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"]},
}
DAY = 24 * 3600.0
BODY = b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n" * 5  # ~200 bytes


def settings(tmp_path: Path) -> CaptureSettings:
    made = CaptureSettings.from_config(CONFIG, tmp_path / "capture", "ep", "AllTraffic")
    assert made is not None
    return made


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jsonl"))


def total_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in files(folder))


def kept_ids(folder: Path) -> set[str]:
    """The inference ids of every record still under ``folder``."""
    return {
        orjson.loads(line)["eventMetadata"]["inferenceId"]
        for path in files(folder)
        for line in path.read_bytes().splitlines()
    }


def hourly_clock(start: float = 1_790_000_000.0, step: float = 7.0):
    """Event times 7 s apart: the records cross hour folders too."""
    ticks = itertools.count()
    return lambda: start + step * next(ticks)


def test_the_capture_folder_stays_within_its_size_bound_and_keeps_the_newest(
    tmp_path,
):
    bounds = CaptureBounds(max_bytes=64_000, retention_seconds=30 * DAY)
    writer = CaptureWriter(settings(tmp_path), clock=hourly_clock(), bounds=bounds)
    folder = writer.endpoint_folder
    written = 0
    for batch in range(100):  # ~20 times the bound
        for i in range(10):
            writer.record(BODY, "text/csv", b"0.5\n", "text/csv", f"{batch}-{i}")
        written += writer.flush()
        assert total_bytes(folder) <= bounds.max_bytes, f"after batch {batch}"
    writer.close()
    assert written == 1000 and writer.failed == 0 and writer.swept > 0
    assert total_bytes(folder) <= bounds.max_bytes
    kept = kept_ids(folder)
    order = [f"{b}-{i}" for b in range(100) for i in range(10)]
    # what is kept is the newest records, every one of them, none older
    assert 0 < len(kept) < len(order)
    assert kept == set(order[-len(kept) :])
    # files are whole-file deletions of about 1/64 of the bound each
    assert all(p.stat().st_size <= bounds.file_bytes for p in files(folder))


def test_several_workers_share_the_bound_and_never_lose_an_open_file(tmp_path):
    """Two writers (two worker processes: flock locks are per open file, so two
    writers in one process hold them as two processes would) sweep the same folder.
    """
    bounds = CaptureBounds(max_bytes=64_000, retention_seconds=30 * DAY)
    writers = [
        CaptureWriter(settings(tmp_path), clock=hourly_clock(), bounds=bounds)
        for _ in range(2)
    ]
    folder = writers[0].endpoint_folder
    for batch in range(60):
        for n, writer in enumerate(writers):
            for i in range(10):
                writer.record(
                    BODY, "text/csv", b"0.5\n", "text/csv", f"{n}-{batch}-{i}"
                )
            writer.flush()
        assert total_bytes(folder) <= bounds.max_bytes, f"after batch {batch}"
        # each writer's newest record is in a file it holds open: never swept
        assert {f"0-{batch}-9", f"1-{batch}-9"} <= kept_ids(folder)
    for writer in writers:
        writer.close()
    assert all(w.failed == 0 and w.captured == 600 for w in writers)
    assert sum(w.swept for w in writers) > 0


def test_files_older_than_the_retention_are_deleted_unless_a_writer_holds_them(
    tmp_path,
):
    bounds = CaptureBounds.from_settings(max_mb=1024, retention_hours=168)
    old_writer = CaptureWriter(settings(tmp_path), bounds=bounds)
    old_writer.record(BODY, "text/csv", b"0.5\n", "text/csv", "old-open")
    old_writer.flush()
    closed = CaptureWriter(settings(tmp_path), bounds=bounds)
    for name in ("old-closed", "young"):
        closed.record(BODY, "text/csv", b"0.5\n", "text/csv", name)
        closed.flush()
        closed._close_files()  # the next record goes to a new file
    [open_file, old_file, young_file] = [
        next(p for p in files(tmp_path) if name.encode() in p.read_bytes())
        for name in ("old-open", "old-closed", "young")
    ]
    eight_days_ago = time.time() - 8 * DAY
    for path in (open_file, old_file):
        os.utime(path, (eight_days_ago, eight_days_ago))

    result = closed.sweep()
    assert result.deleted == 1 and result.in_use == 1
    assert kept_ids(closed.endpoint_folder) == {"old-open", "young"}
    assert young_file.exists() and not old_file.exists()
    assert not old_file.parent.exists() or any(old_file.parent.iterdir())

    old_writer.close()  # the worker stops: its file is no longer held, and goes
    assert kept_ids(closed.endpoint_folder) == {"young"}
    assert old_writer.swept == 1


def test_a_writer_closes_the_files_of_an_hour_that_is_over(tmp_path):
    """An idle worker's file of a past hour is not held open forever, so the age
    sweep can reach it.
    """
    times = iter([1_790_000_000.0, 1_790_000_000.0 + 3 * 3600])
    writer = CaptureWriter(settings(tmp_path), clock=lambda: next(times))
    writer.record(BODY, "text/csv", b"0.5\n", "text/csv", "a")
    writer.flush()
    assert len(writer._files) == 1
    writer.sweep()  # the clock is three hours on
    assert writer._files == {}
    writer.close()


def test_sweeps_running_at_once_agree_and_a_vanished_file_is_no_error(
    tmp_path, monkeypatch
):
    folder = tmp_path / "ep"
    for n in range(200):
        path = folder / "AllTraffic" / f"{n // 50:02d}" / f"{n:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000 + n, 1_000 + n))  # oldest first
    bounds = CaptureBounds(max_bytes=4_000, retention_seconds=1e9)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            sweep_capture(folder, bounds, now=2_000)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    left = files(folder)
    assert sum(p.stat().st_size for p in left) <= bounds.target_bytes
    assert [p.name for p in left] == [f"{n:03d}.jsonl" for n in range(170, 200)]

    # a listing that names a file another sweep deleted since
    stale = [(folder / "gone.jsonl", 0.0, 100), *capture_module._capture_files(folder)]
    monkeypatch.setattr(capture_module, "_capture_files", lambda _folder: stale)
    result = sweep_capture(folder, CaptureBounds(100, 1e9), now=2_000)
    assert result.deleted == len(stale) and files(folder) == []


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        CaptureBounds(max_bytes=0)
    with pytest.raises(ValueError, match="must be positive"):
        CaptureBounds.from_settings(max_mb=10, retention_hours=0)
    assert CaptureBounds().file_bytes == (1024 << 20) // 64


# --- configuration ------------------------------------------------------------------


def test_the_bounds_are_configured_with_documented_defaults():
    deployment = load_config("dev").deployment
    assert deployment.data_capture_max_mb == DEFAULT_MAX_MB == 1024
    assert deployment.data_capture_retention_hours == DEFAULT_RETENTION_HOURS == 168
    assert deployment.data_capture_retention_days == 7
    environ = {
        "MLOPS_DEPLOYMENT__DATA_CAPTURE_MAX_MB": "50",
        "MLOPS_DEPLOYMENT__DATA_CAPTURE_RETENTION_HOURS": "25",
    }
    deployment = load_config("local", environ=environ).deployment
    assert deployment.data_capture_max_mb == 50
    assert deployment.data_capture_retention_days == 2  # rounded up


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("DATA_CAPTURE_MAX_MB", "0"),
        ("DATA_CAPTURE_MAX_MB", "-5"),
        ("DATA_CAPTURE_MAX_MB", "lots"),
        ("DATA_CAPTURE_MAX_MB", ""),
        ("DATA_CAPTURE_RETENTION_HOURS", "0"),
        ("DATA_CAPTURE_RETENTION_HOURS", "1.5"),
        ("DATA_CAPTURE_RETENTION_HOURS", "null"),
    ],
)
def test_bad_bounds_fail_when_the_config_loads(key, bad):
    variable = f"MLOPS_DEPLOYMENT__{key}"
    with pytest.raises(ConfigError, match=f"deployment.{key.lower()}.*{variable}"):
        load_config("local", environ={variable: bad})


def test_a_bad_bound_is_a_configuration_error_exit_2(tmp_path):
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLOPS_DEPLOYMENT__DATA_CAPTURE_RETENTION_HOURS": "-1",
        "MLOPS_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.endpoint", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "deployment.data_capture_retention_hours" in result.stderr


# --- from the server's command line to each worker's writer --------------------------


def test_the_bounds_reach_each_workers_writer(tmp_path, monkeypatch):
    spec = Generation(
        model_dir="m",
        endpoint_name="ep",
        data_capture_config=CONFIG,
        data_capture_dir=str(tmp_path),
        data_capture_max_mb=2,
        data_capture_retention_hours=5,
    )
    seen: list[list[str]] = []

    class Stop(Exception):
        pass

    def popen(command, **_kwargs):
        seen.append(command)
        raise Stop

    monkeypatch.setattr("inference.supervisor.subprocess.Popen", popen)
    import socket

    with socket.socket() as sock, pytest.raises(Stop):
        _spawn(sock, spec, None)
    command = seen[0]
    assert command[command.index("--data-capture-max-mb") + 1] == "2"
    assert command[command.index("--data-capture-retention-hours") + 1] == "5"

    made: list[CaptureWriter] = []
    monkeypatch.setattr("inference.model.load_model", lambda *a, **k: None)
    monkeypatch.setattr("inference.worker._score_one_row", lambda model: None)
    monkeypatch.setattr("inference.worker._no_signal_cancels_parsing", lambda: None)

    def app(model, endpoint, variant, capture):
        made.append(capture)

    monkeypatch.setattr("inference.app.ScoringApp", app)
    monkeypatch.setattr("inference.worker._serve", lambda *args, **kwargs: 0)
    monkeypatch.setattr("inference.worker.socket.socket", lambda fileno: None)
    worker_args = command[command.index("--fd") :]
    assert worker_main(worker_args) == 0
    assert made[0].bounds == CaptureBounds(2 << 20, 5 * 3600.0)


def test_the_configured_bounds_reach_a_local_endpoints_control_file(tmp_path):
    """What the workers are given comes from the configuration: build_resources hands
    the deployment's bounds to LocalEndpoints, whose control file carries them (and a
    change of them is a change of what serves, so a deploy applies it).
    """
    from stack.resources import build_resources

    config = load_config(
        "local",
        {
            "state_dir": str(tmp_path / "state"),
            "deployment.data_capture_max_mb": 7,
            "deployment.data_capture_retention_hours": 3,
        },
        environ={},
    )
    endpoints = build_resources(config).endpoints
    spec = endpoints._capture_spec(
        {"DataCaptureConfig": {**CONFIG, "DestinationS3Uri": "s3://bkt/capture"}}
    )
    assert spec["data_capture_max_mb"] == 7
    assert spec["data_capture_retention_hours"] == 3
    off = endpoints._capture_spec({})
    assert off["data_capture_max_mb"] is None
    assert (
        endpoints._serving_spec("never-deployed", spec)["data_capture_max_mb"] is None
    )


# --- on AWS: the age bound is an S3 lifecycle rule ------------------------------------


def _platform_template() -> dict:
    from tests.monitoring.test_infra import template

    return template("platform.yaml")


def test_the_artifacts_bucket_expires_the_capture_prefix():
    platform = _platform_template()
    rules = platform["Resources"]["ArtifactsBucket"]["Properties"][
        "LifecycleConfiguration"
    ]["Rules"]
    (rule,) = [r for r in rules if r["Id"] == "expire-data-capture"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == {"Ref": "DataCapturePrefix"}
    assert rule["ExpirationInDays"] == {"Ref": "DataCaptureRetentionDays"}
    # the bucket is versioned: an expired capture file's version goes too
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    parameters = platform["Parameters"]
    default = CaptureBounds().retention_seconds / 3600 / 24
    assert parameters["DataCaptureRetentionDays"]["Default"] == default == 7


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_each_environment_s_lifecycle_matches_its_capture_settings(env):
    """The rule's days are data_capture_retention_hours rounded up to days, and its
    prefix is the configured capture URI's (when the environment captures).
    """
    from stack.objectstore import split_uri
    from tests.conftest import PROJECT_ROOT

    declared = _platform_template()["Parameters"]
    given = orjson.loads((PROJECT_ROOT / f"infra/parameters/{env}.json").read_bytes())[
        "Parameters"
    ]

    def value(name: str) -> str:
        return str(given.get(name, declared[name]["Default"]))

    config = load_config(env)
    days = config.deployment.data_capture_retention_days
    assert int(value("DataCaptureRetentionDays")) == days
    assert days * 24 >= config.deployment.data_capture_retention_hours > (days - 1) * 24
    if config.deployment.data_capture_s3_uri:
        bucket, key = split_uri(config.deployment.data_capture_s3_uri)
        assert bucket == config.aws.bucket == value("BucketName")
        assert value("DataCapturePrefix") == key.rstrip("/") + "/"
