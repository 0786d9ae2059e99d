"""Run processing and training jobs locally under SageMaker's container contract.

Each job gets a folder standing in for ``/opt/ml`` per instance (``OPT_ML_ROOT``), its
inputs copied from the object store to the paths the request names, its config files
written as SageMaker writes them, our code started as a subprocess, and its outputs
copied back to the object store when it exits 0. ``/opt/ml/output/message`` (processing)
or ``/opt/ml/output/failure`` (training) becomes the failure reason, as on SageMaker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.objectstore import ObjectStore, join_uri

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTAINER_ROOT = "/opt/ml"
# What our image runs for ``docker run IMAGE <command>`` (see docker/entrypoint.sh).
IMAGE_COMMANDS: dict[str, list[str]] = {
    "train": ["python", "-m", "training.train"],
    "serve": ["python", "-m", "inference.server"],
}


class JobFailed(Exception):
    """A job exited non-zero; the message is its failure reason."""

    def __init__(self, reason: str, log_paths: Sequence[Path] = ()) -> None:
        super().__init__(reason)
        self.log_paths = list(log_paths)


class RunningJobs:
    """The job processes alive now, so that an interrupted runner can stop them all
    (steps run in worker threads, where Ctrl-C does not arrive).
    """

    def __init__(self) -> None:
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def add(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.add(process)

    def discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.discard(process)

    def kill_all(self) -> None:
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class JobResult:
    job_name: str
    properties: dict[str, Any]
    log_paths: list[Path]


def _local(root: Path, container_path: str) -> Path:
    if not (container_path + "/").startswith(CONTAINER_ROOT + "/"):
        raise JobFailed(f"{container_path} is not under {CONTAINER_ROOT}")
    return root / container_path[len(CONTAINER_ROOT) :].lstrip("/")


def _command(argv: Sequence[str]) -> list[str]:
    """Run ``python`` as this interpreter: the image's python is ours here."""
    argv = list(argv)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def _environment(
    extra: Mapping[str, str], root: Path, platform: Mapping[str, str]
) -> dict:
    env = dict(os.environ)
    env.update(platform)
    env.update({k: str(v) for k, v in extra.items()})
    env["OPT_ML_ROOT"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
    )
    return env


def _run_all(
    commands: list[tuple[list[str], dict, Path]],
    timeout: float,
    jobs: RunningJobs | None = None,
) -> list[int]:
    """Start every instance, wait for all, kill what outlives ``timeout``."""
    jobs = jobs or RunningJobs()
    processes: list[subprocess.Popen[bytes]] = []
    for argv, env, log_path in commands:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            processes.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=log_path.parent,
                )
            )
            jobs.add(processes[-1])
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process in processes:
            try:
                remaining = max(0.0, deadline - time.monotonic())
                codes.append(process.wait(timeout=remaining))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes.append(-9)
    except BaseException:  # Ctrl-C: no job outlives the runner
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        raise
    finally:
        for process in processes:
            jobs.discard(process)
    return codes


def _reason(root: Path, name: str, code: int, log_path: Path) -> str:
    message = root / "output" / name
    if message.exists() and message.read_text().strip():
        return message.read_text().strip()
    if code == -9:
        return "the job ran past MaxRuntimeInSeconds and was stopped"
    tail = (
        log_path.read_text(errors="replace").strip().splitlines()[-3:]
        if log_path.exists()
        else []
    )
    return f"exited with code {code}" + (f": {' | '.join(tail)}" if tail else "")


def run_processing_job(
    job_name: str,
    request: dict[str, Any],
    work_dir: Path,
    store: ObjectStore,
    platform_env: Mapping[str, str],
    jobs: RunningJobs | None = None,
) -> JobResult:
    """Execute a resolved ``CreateProcessingJob`` request with InstanceCount workers."""
    cluster = request["ProcessingResources"]["ClusterConfig"]
    count = int(cluster.get("InstanceCount", 1))
    hosts = [f"algo-{i + 1}" for i in range(count)]
    app = request["AppSpecification"]
    argv = _command(
        [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]
    )
    if not argv:
        raise JobFailed("AppSpecification has no ContainerEntrypoint")
    timeout = float(
        request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400)
    )
    commands, roots = [], []
    for index, host in enumerate(hosts):
        root = work_dir / host / "opt" / "ml"
        _write_json(
            root / "config" / "resourceconfig.json",
            {"current_host": host, "hosts": hosts},
        )
        _write_json(root / "config" / "processingjobconfig.json", request)
        for item in request.get("ProcessingInputs", []):
            _stage_processing_input(item, root, store, index, count)
        for output in request.get("ProcessingOutputConfig", {}).get("Outputs", []):
            _local(root, output["S3Output"]["LocalPath"]).mkdir(
                parents=True, exist_ok=True
            )
        env = _environment(request.get("Environment", {}), root, platform_env)
        commands.append((argv, env, work_dir / host / "job.log"))
        roots.append(root)
    codes = _run_all(commands, timeout, jobs)
    for root, code, (_, _, log_path) in zip(roots, codes, commands, strict=True):
        if code != 0:
            raise JobFailed(
                _reason(root, "message", code, log_path), [c[2] for c in commands]
            )
    for output in request.get("ProcessingOutputConfig", {}).get("Outputs", []):
        s3 = output["S3Output"]
        for root in roots:
            store.upload_dir(_local(root, s3["LocalPath"]), s3["S3Uri"])
    properties = {
        "ProcessingJobName": job_name,
        "ProcessingJobStatus": "Completed",
        "ProcessingInputs": request.get("ProcessingInputs", []),
        "ProcessingOutputConfig": request.get("ProcessingOutputConfig", {}),
        "ProcessingResources": request["ProcessingResources"],
        "AppSpecification": app,
        "Environment": request.get("Environment", {}),
    }
    return JobResult(job_name, properties, [c[2] for c in commands])


def _stage_processing_input(
    item: dict, root: Path, store: ObjectStore, index: int, count: int
) -> None:
    s3 = item.get("S3Input")
    if not s3:
        raise JobFailed(
            f"input {item.get('InputName')}: only S3Input is supported locally"
        )
    target = _local(root, s3["LocalPath"])
    target.mkdir(parents=True, exist_ok=True)
    uri = s3["S3Uri"]
    if s3.get("S3DataDistributionType") == "ShardedByS3Key":
        for position, object_uri in enumerate(store.list(uri)):
            if position % count == index:
                store.download_file(object_uri, target / object_uri.rsplit("/", 1)[-1])
        return
    store.download_prefix(uri, target)


def run_training_job(
    job_name: str,
    request: dict[str, Any],
    work_dir: Path,
    store: ObjectStore,
    platform_env: Mapping[str, str],
    jobs: RunningJobs | None = None,
) -> JobResult:
    """Execute a resolved ``CreateTrainingJob`` request on one instance with our
    image.
    """
    root = work_dir / "algo-1" / "opt" / "ml"
    count = int(request.get("ResourceConfig", {}).get("InstanceCount", 1))
    if count != 1:
        raise JobFailed(
            "the local runner trains on one instance (InstanceCount must be 1)"
        )
    channels = {}
    for channel in request.get("InputDataConfig", []):
        name = channel["ChannelName"]
        source = channel["DataSource"]["S3DataSource"]
        store.download_prefix(source["S3Uri"], root / "input" / "data" / name)
        channels[name] = {
            "TrainingInputMode": channel.get("InputMode", "File"),
            "S3DistributionType": source.get(
                "S3DataDistributionType", "FullyReplicated"
            ),
            "RecordWrapperType": "None",
        }
    config = root / "input" / "config"
    _write_json(config / "hyperparameters.json", request.get("HyperParameters", {}))
    _write_json(config / "inputdataconfig.json", channels)
    _write_json(
        config / "resourceconfig.json",
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"},
    )
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "output" / "data").mkdir(parents=True, exist_ok=True)
    spec = request["AlgorithmSpecification"]
    argv = _command(
        [*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])]
        if spec.get("ContainerEntrypoint")
        else IMAGE_COMMANDS["train"]
    )
    timeout = float(
        request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400)
    )
    env = _environment(request.get("Environment", {}), root, platform_env)
    env["TRAINING_JOB_NAME"] = job_name  # as SageMaker sets it in the container
    log_path = work_dir / "algo-1" / "job.log"
    (code,) = _run_all([(argv, env, log_path)], timeout, jobs)
    if code != 0:
        raise JobFailed(_reason(root, "failure", code, log_path), [log_path])
    archive = work_dir / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((root / "model").rglob("*")):
            tar.add(
                path,
                arcname=path.relative_to(root / "model").as_posix(),
                recursive=False,
            )
    output_path = request["OutputDataConfig"]["S3OutputPath"]
    model_uri = join_uri(output_path, job_name, "output", "model.tar.gz")
    store.upload_file(archive, model_uri)
    properties = {
        "TrainingJobName": job_name,
        "TrainingJobStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        "HyperParameters": request.get("HyperParameters", {}),
        "OutputDataConfig": request["OutputDataConfig"],
        "AlgorithmSpecification": spec,
    }
    return JobResult(job_name, properties, [log_path])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
