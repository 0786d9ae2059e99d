"""Run processing and training jobs locally as SageMaker runs them in our image.

Each job runs the staged image's code (``pipelines.image``: derived from the Dockerfile,
never the checkout), with the environment SageMaker gives a container and nothing from
the caller's shell: the image's ``ENV``, the request's ``Environment``, the variables
SageMaker sets itself, and the local platform's (``Platform``: where the stand-ins for
AWS's services live on this machine). A folder per instance stands in for ``/opt/ml``:
inputs copied from the object store to the paths the request names, the config files
SageMaker writes, outputs copied back when the job exits 0; ``/opt/ml/output/message``
(processing) or ``/opt/ml/output/failure`` (training) is the failure reason.

Isolation (``ISOLATIONS``): with bubblewrap (``bwrap``) the job sees the image's own
paths (``/opt/ml``, ``/opt/venv``, ``WORKDIR``) and, of this machine, only the system,
this Python, the image's dependencies and the platform's folders: nothing of the
checkout. As root it runs as the image's ``USER`` against ``/opt/ml`` folders owned
by root, as SageMaker mounts them, so a non-root USER fails here as it would there.
Without bubblewrap (``none``, the named fallback) the job runs as a plain process: the
image paths are mapped (``OPT_ML_ROOT``, ``PATH``), and a non-root USER is refused
before the job starts, with the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pipelines.image import StagedImage
from stack.objectstore import ObjectStore, join_uri

CONTAINER_ROOT = "/opt/ml"
# What our image runs for ``docker run IMAGE <command>`` (see docker/entrypoint.sh);
# a training job without a ContainerEntrypoint is started as ``IMAGE train``.
IMAGE_COMMANDS: dict[str, list[str]] = {
    "train": ["python", "-m", "training.train"],
    "serve": ["python", "-m", "inference.server"],
}
Isolation = Literal["bwrap", "none"]
ISOLATIONS = ("auto", "bwrap", "none")


def _die_with_runner() -> list[str]:
    """util-linux's setpriv, so the job is killed when the runner's thread that
    started it dies (as bubblewrap's --die-with-parent does for sandboxed jobs)."""
    return ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


@dataclass(frozen=True)
class Platform:
    """What the local platform gives every job besides its request: the one channel
    for what AWS would provide and this machine provides instead.

    ``variables`` (see ``pipelines.local_runner.platform_variables`` for each entry
    and why) and ``shared`` folders a job may write (the state folder of the local
    stand-ins), visible at their own paths.
    """

    variables: dict[str, str] = field(default_factory=dict)
    shared: tuple[Path, ...] = ()
    region: str = "us-east-1"
    isolation: str = "auto"


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
        self._stopped = False

    def add(self, process: subprocess.Popen[bytes]) -> None:
        """Track ``process``; once ``kill_all`` ran, kill it instead: a step still
        starting jobs (a tuning job's next trial) must not outlive the runner."""
        with self._lock:
            if not self._stopped:
                self._processes.add(process)
                return
        process.kill()
        process.wait()

    def discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.discard(process)

    def kill_all(self) -> None:
        with self._lock:
            self._stopped = True
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
    parts = PurePosixPath(container_path).parts
    if not (container_path + "/").startswith(CONTAINER_ROOT + "/") or ".." in parts:
        raise JobFailed(f"{container_path} is not a path under {CONTAINER_ROOT}")
    return root / container_path[len(CONTAINER_ROOT) :].lstrip("/")


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap is installed and may make a sandbox here."""
    if shutil.which("bwrap") is None:
        return False
    try:
        probe = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def resolve_isolation(wanted: str) -> Isolation:
    """``auto``: bubblewrap where it works, else none; ``bwrap`` must work."""
    if wanted not in ISOLATIONS:
        raise ValueError(f"isolation {wanted!r}: choose one of {', '.join(ISOLATIONS)}")
    if wanted == "none":
        return "none"
    if bwrap_works():
        return "bwrap"
    if wanted == "bwrap":
        raise JobFailed(
            "isolation bwrap: bubblewrap is missing or cannot make a sandbox here "
            "(apt-get install bubblewrap)"
        )
    return "none"


@dataclass(frozen=True)
class _Instance:
    """One host of a job: its /opt/ml folder, its WORKDIR and its log."""

    host: str
    root: Path  # stands for /opt/ml
    workdir: Path  # stands for the image's WORKDIR
    log_path: Path


class Container:
    """Starts instances of jobs from the staged image, under ``platform``."""

    def __init__(self, image: StagedImage, platform: Platform) -> None:
        self.image = image
        self.platform = platform
        self.isolation = resolve_isolation(platform.isolation)

    def instance(self, work_dir: Path, host: str) -> _Instance:
        base = work_dir / host
        for folder in (base / "opt" / "ml", base / "workdir"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        return _Instance(host, base / "opt" / "ml", base / "workdir", base / "job.log")

    def command(
        self,
        argv: Sequence[str],
        instance: _Instance,
        request_env: Mapping[str, Any],
        sagemaker_env: Mapping[str, str],
        network_isolation: bool = False,
        host_addresses: Mapping[str, str] | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start ``argv`` in the image; with
        ``network_isolation`` (the request's EnableNetworkIsolation) no network at
        all, as SageMaker runs such a job: only in the sandbox (the fallback cannot
        take it away, which docs/local-vs-aws.md says).

        ``host_addresses`` (a job of several hosts) makes the hosts' names resolve:
        in the sandbox through an ``/etc/hosts`` of the job's own, as on SageMaker;
        in the fallback, which cannot replace ``/etc/hosts`` without root, through
        ``MLOPS_HOST_ADDRESSES`` (JSON) in the job's environment.
        """
        self._check_user()
        env = self._environment(instance, request_env, sagemaker_env)
        argv = [str(a) for a in argv]
        if self.isolation == "none":
            if host_addresses:
                env["MLOPS_HOST_ADDRESSES"] = json.dumps(dict(host_addresses))
            argv[0] = self._host_executable(argv[0])
            # as the sandbox's --die-with-parent: no job outlives a runner killed -9
            return [*_die_with_runner(), *argv], env
        switch = []
        if self.image.user_ids is not None:
            uid, gid = self.image.user_ids
            switch = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--",
            ]
        sandbox = self._sandbox(instance)
        if host_addresses:
            hosts_file = instance.workdir.parent / "hosts"
            hosts_file.write_text(_hosts_file(host_addresses))
            # after /etc's own bind, so it covers the machine's file
            sandbox[-2:-2] = ["--ro-bind", str(hosts_file), "/etc/hosts"]
        if network_isolation:
            sandbox.insert(1, "--unshare-net")
        return [*sandbox, "--", *switch, *argv], env

    def server_command(
        self, command: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The local endpoint's server (``python -m inference.server ...``) from the
        staged image: its code and ``ENV``, nothing of the caller's shell. A plain
        process, not a sandbox: it outlives the runner that started it, and is
        stopped by its own pid.
        """
        env = dict(self.image.env)
        env["PATH"] = self._host_search_path(env.get("PATH", ""))
        home = (
            self.platform.shared[0] / "endpoints" / "home"
            if self.platform.shared
            else Path("/")
        )
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        argv = [str(a) for a in command]
        argv[0] = self._host_executable(argv[0])
        return argv, env

    def entrypoint(self, arguments: Sequence[str]) -> list[str]:
        """``docker run IMAGE <arguments>``: the image's ENTRYPOINT (else its CMD)."""
        if self.image.entrypoint:
            return [*self.image.entrypoint, *arguments]
        return [*arguments] if arguments else list(self.image.cmd)

    def _check_user(self) -> None:
        ids = self.image.user_ids
        if ids is None:
            return
        if self.isolation == "bwrap" and os.geteuid() == 0:
            return  # the job runs as that user and meets the root-owned mounts
        raise JobFailed(
            f"the image runs as USER {self.image.user}, but SageMaker mounts "
            "/opt/ml/... owned by root and expects the container to run as root: "
            "this job could not write its outputs there (checked before starting: "
            "this runner cannot switch users without bubblewrap and root)"
        )

    def _environment(
        self,
        instance: _Instance,
        request_env: Mapping[str, Any],
        sagemaker_env: Mapping[str, str],
    ) -> dict[str, str]:
        env = dict(self.image.env)
        env["HOSTNAME"] = instance.host
        env["HOME"] = "/root" if self.image.user_ids is None else "/"
        env.update(sagemaker_env)
        env.update({k: str(v) for k, v in request_env.items()})
        env.update(self.platform.variables)
        if self.isolation == "none":
            env["PATH"] = self._host_search_path(env.get("PATH", ""))
            env["HOME"] = str(instance.workdir.parent / "home")
            Path(env["HOME"]).mkdir(exist_ok=True)
            env["OPT_ML_ROOT"] = str(instance.root)
        else:
            env["OPT_ML_ROOT"] = CONTAINER_ROOT
        return env

    def _on_host(self, image_path: str) -> str:
        """Where an image path is on this machine: the staged copy if the stage
        provides it (``/opt/venv/bin``), else the same path (``/usr/bin``).
        """
        for staged in self.image.staged_paths():
            if image_path == staged or image_path.startswith(staged.rstrip("/") + "/"):
                return str(self.image.host_path(image_path))
        return image_path

    def _host_search_path(self, image_search_path: str) -> str:
        """The image's ``PATH`` with each of its folders where it is on this machine."""
        return ":".join(self._on_host(p) for p in image_search_path.split(":"))

    def _host_executable(self, program: str) -> str:
        # a bare name is looked up on the job's PATH (the image's venv first)
        return self._on_host(program) if program.startswith("/") else program

    def _sandbox(self, instance: _Instance) -> list[str]:
        """bubblewrap's arguments: the image's paths, the system read-only, the
        platform's folders, and nothing else of this machine.
        """
        binds: list[tuple[str, Path, str]] = []
        for entry in sorted(Path("/usr").iterdir()):
            if entry.name != "local":
                binds.append(("--ro-bind", entry, str(entry)))
        binds.append(("--ro-bind", Path("/etc"), "/etc"))
        for folder in self.image.host_dependencies:
            binds.append(("--ro-bind", Path(folder), folder))
        for image_path in self.image.staged_paths():
            binds.append(("--ro-bind", self.image.host_path(image_path), image_path))
        binds.append(("--bind", instance.root, CONTAINER_ROOT))
        binds.append(("--bind", instance.workdir, self.image.workdir))
        for shared in self.platform.shared:
            resolved = shared.resolve()
            binds.append(("--bind", resolved, str(resolved)))
        args = [
            "bwrap",
            "--die-with-parent",
            "--unshare-uts",
            "--hostname",
            instance.host,
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",  # noqa: S108 (the sandbox's own, a fresh tmpfs)
        ]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                binds.append(("--ro-bind", path, str(path)))
        for folder in _parents([d for _, _, d in binds]):
            args += ["--perms", "0755", "--dir", folder]
        for option, source, destination in binds:
            args += [option, str(source), destination]
        return [*args, "--chdir", self.image.workdir]


def _parents(destinations: list[str]) -> list[str]:
    """The folders above ``destinations`` that bubblewrap must make (readable by
    anyone: it makes missing ones 0700 otherwise), shallowest first.
    """
    taken = set(destinations)
    folders = {
        str(parent)
        for destination in destinations
        for parent in PurePosixPath(destination).parents
        if str(parent) not in ("/", "/tmp", "/proc", "/dev")  # noqa: S108
        and str(parent) not in taken
        and not any(str(parent).startswith(t + "/") for t in taken)
    }
    return sorted(folders, key=lambda f: (f.count("/"), f))


def _hosts_file(host_addresses: Mapping[str, str]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{host}" for host, address in host_addresses.items()]
    return "\n".join(lines) + "\n"


def _run_all(
    commands: list[tuple[list[str], dict[str, str], _Instance]],
    timeout: float,
    jobs: RunningJobs | None = None,
    *,
    stop_on_failure: bool = False,
) -> list[int]:
    """Start every instance, wait for all, kill what outlives ``timeout``; with
    ``stop_on_failure``, also stop the others once one exits non-zero (a training
    job's hosts wait for each other: SageMaker stops them all when one fails).
    """
    jobs = jobs or RunningJobs()
    processes: list[subprocess.Popen[bytes]] = []
    start_times: list[float] = []
    for argv, env, instance in commands:
        instance.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(instance.log_path, "wb") as log:
            start_times.append(time.time())
            try:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=instance.workdir,
                )
            except OSError as exc:
                for started in processes:
                    started.kill()
                    started.wait()
                raise JobFailed(f"cannot start {argv[0]}: {exc}") from None
            processes.append(process)
            jobs.add(process)
    deadline = time.monotonic() + timeout
    codes = []
    try:
        if stop_on_failure:
            _stop_all_on_first_failure(processes, deadline)
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
    for (_, _, instance), start, code in zip(commands, start_times, codes, strict=True):
        _write_times(instance, start, code)
    return codes


def _write_times(instance: _Instance, started: float, code: int) -> None:
    """``times.json`` beside the instance's log: when its process started and when
    the runner saw it exit (Unix seconds), for ``benchmarks.loop``'s split of a
    step into the runner's part, the job's start-up and its work.
    """
    _write_json(
        instance.log_path.with_name("times.json"),
        {"started": started, "ended": time.time(), "exit_code": code},
    )


def _stop_all_on_first_failure(
    processes: list[subprocess.Popen[bytes]], deadline: float
) -> None:
    """Wait until every process exits, one fails (then kill the rest) or the
    deadline passes (the caller kills what is left).
    """
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        if all(code is not None for code in codes):
            return
        if any(code not in (None, 0) for code in codes):
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            return
        time.sleep(0.1)


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
    container: Container,
    jobs: RunningJobs | None = None,
) -> JobResult:
    """Execute a resolved ``CreateProcessingJob`` request with InstanceCount workers."""
    cluster = request["ProcessingResources"]["ClusterConfig"]
    count = int(cluster.get("InstanceCount", 1))
    hosts = [f"algo-{i + 1}" for i in range(count)]
    app = request["AppSpecification"]
    # SageMaker runs ContainerEntrypoint when given, else the image's ENTRYPOINT, with
    # ContainerArguments after it
    argv = (
        [*app["ContainerEntrypoint"], *app.get("ContainerArguments", [])]
        if app.get("ContainerEntrypoint")
        else container.entrypoint(app.get("ContainerArguments", []))
    )
    if not argv:
        raise JobFailed("AppSpecification has no ContainerEntrypoint")
    timeout = float(
        request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400)
    )
    region = container.platform.region
    sagemaker_env = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    commands, instances = [], []
    for index, host in enumerate(hosts):
        instance = container.instance(work_dir, host)
        root = instance.root
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
        command, env = container.command(
            argv,
            instance,
            request.get("Environment", {}),
            sagemaker_env,
            network_isolation=bool(
                request.get("NetworkConfig", {}).get("EnableNetworkIsolation")
            ),
        )
        commands.append((command, env, instance))
        instances.append(instance)
    codes = _run_all(commands, timeout, jobs)
    logs = [i.log_path for i in instances]
    for instance, code in zip(instances, codes, strict=True):
        if code != 0:
            raise JobFailed(
                _reason(instance.root, "message", code, instance.log_path), logs
            )
    for output in request.get("ProcessingOutputConfig", {}).get("Outputs", []):
        s3 = output["S3Output"]
        for instance in instances:
            store.upload_dir(_local(instance.root, s3["LocalPath"]), s3["S3Uri"])
    properties = {
        "ProcessingJobName": job_name,
        "ProcessingJobStatus": "Completed",
        "ProcessingInputs": request.get("ProcessingInputs", []),
        "ProcessingOutputConfig": request.get("ProcessingOutputConfig", {}),
        "ProcessingResources": request["ProcessingResources"],
        "AppSpecification": app,
        "Environment": request.get("Environment", {}),
    }
    return JobResult(job_name, properties, logs)


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
    if s3.get("S3DataDistributionType") == "ShardedByS3Key":
        _download_share(store, s3["S3Uri"], target, index, count)
    else:
        store.download_prefix(s3["S3Uri"], target)


def _download_share(
    store: ObjectStore, prefix_uri: str, target: Path, index: int, count: int
) -> None:
    """Host ``index`` of ``count``'s share of a ShardedByS3Key prefix: every
    ``count``-th object, as SageMaker deals them out (processing and training alike).
    """
    target.mkdir(parents=True, exist_ok=True)
    for position, uri in enumerate(store.list(prefix_uri)):
        if position % count == index:
            store.download_file(uri, target / uri.rsplit("/", 1)[-1])


def run_training_job(
    job_name: str,
    request: dict[str, Any],
    work_dir: Path,
    store: ObjectStore,
    container: Container,
    jobs: RunningJobs | None = None,
) -> JobResult:
    """Execute a resolved ``CreateTrainingJob`` request on InstanceCount instances of
    our image (``docker run IMAGE train`` unless it names a ContainerEntrypoint).

    As SageMaker: every host gets the channels (all of each FullyReplicated prefix,
    its share of the objects of a ShardedByS3Key one) and a ``resourceconfig.json``
    naming it and all hosts (``algo-1`` ... ``algo-N``), which resolve each other by
    name (``_HostAddresses``: loopback addresses of the job's own); the job fails
    when one host fails, and the others are stopped; the model archive and
    ``output.tar.gz`` hold every host's ``/opt/ml/model`` and ``/opt/ml/output/data``
    together, where two hosts' files must not clash.
    """
    count = int(request.get("ResourceConfig", {}).get("InstanceCount", 1))
    if count < 1:
        raise JobFailed(f"InstanceCount {count}: a training job needs at least one")
    hosts = [f"algo-{i + 1}" for i in range(count)]
    network_isolation = bool(request.get("EnableNetworkIsolation"))
    if count > 1 and network_isolation and container.isolation == "bwrap":
        raise JobFailed(
            "EnableNetworkIsolation with several training instances cannot run "
            "locally: each host's sandbox would have a network of its own, where "
            "the hosts cannot reach each other as they do on SageMaker"
        )
    spec = request["AlgorithmSpecification"]
    argv = (
        [*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])]
        if spec.get("ContainerEntrypoint")
        else container.entrypoint(["train"])
    )
    timeout = float(
        request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400)
    )
    region = container.platform.region
    sagemaker_env = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "TRAINING_JOB_NAME": job_name,
        "TRAINING_JOB_ARN": (
            f"arn:aws:sagemaker:{region}:000000000000:training-job/{job_name}"
        ),
    }
    with _HOST_ADDRESSES.lease(hosts) as addresses:
        commands, instances = [], []
        for index, host in enumerate(hosts):
            instance = container.instance(work_dir, host)
            _stage_training_host(request, instance.root, store, hosts, index)
            command, env = container.command(
                argv,
                instance,
                request.get("Environment", {}),
                sagemaker_env,
                network_isolation=network_isolation,
                host_addresses=addresses if count > 1 else None,
            )
            commands.append((command, env, instance))
            instances.append(instance)
        codes = _run_all(commands, timeout, jobs, stop_on_failure=count > 1)
    logs = [i.log_path for i in instances]
    failed = _first_failure(instances, codes)
    if failed is not None:
        instance, code = failed
        reason = _reason(instance.root, "failure", code, instance.log_path)
        raise JobFailed(reason if count == 1 else f"{instance.host}: {reason}", logs)
    output_path = request["OutputDataConfig"]["S3OutputPath"]
    model_uri = join_uri(output_path, job_name, "output", "model.tar.gz")
    archive = work_dir / "model.tar.gz"
    _archive_hosts(archive, [(i.host, i.root / "model") for i in instances])
    store.upload_file(archive, model_uri)
    data = [(i.host, i.root / "output" / "data") for i in instances]
    if any(any(folder.rglob("*")) for _, folder in data):
        outputs = work_dir / "output.tar.gz"
        _archive_hosts(outputs, data)
        store.upload_file(
            outputs, join_uri(output_path, job_name, "output", "output.tar.gz")
        )
    properties = {
        "TrainingJobName": job_name,
        "TrainingJobStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        "HyperParameters": request.get("HyperParameters", {}),
        "OutputDataConfig": request["OutputDataConfig"],
        "AlgorithmSpecification": spec,
        "ResourceConfig": request.get("ResourceConfig", {}),
    }
    return JobResult(job_name, properties, logs)


def _stage_training_host(
    request: dict[str, Any],
    root: Path,
    store: ObjectStore,
    hosts: list[str],
    index: int,
) -> None:
    """One host's ``/opt/ml``: its channels and the config files SageMaker writes."""
    channels = {}
    for channel in request.get("InputDataConfig", []):
        name = channel["ChannelName"]
        source = channel["DataSource"]["S3DataSource"]
        distribution = source.get("S3DataDistributionType", "FullyReplicated")
        target = root / "input" / "data" / name
        if distribution == "ShardedByS3Key":
            _download_share(store, source["S3Uri"], target, index, len(hosts))
        else:
            store.download_prefix(source["S3Uri"], target)
        channels[name] = {
            "TrainingInputMode": channel.get("InputMode", "File"),
            "S3DistributionType": distribution,
            "RecordWrapperType": "None",
        }
    config = root / "input" / "config"
    _write_json(config / "hyperparameters.json", request.get("HyperParameters", {}))
    _write_json(config / "inputdataconfig.json", channels)
    _write_json(
        config / "resourceconfig.json",
        {"current_host": hosts[index], "hosts": hosts, "network_interface_name": "lo"},
    )
    for folder in (root / "model", root / "output" / "data"):
        folder.mkdir(parents=True, exist_ok=True)


def _first_failure(
    instances: list[_Instance], codes: list[int]
) -> tuple[_Instance, int] | None:
    """The host whose failure failed the job: one that wrote a failure reason, else
    one that exited on its own, else one stopped (its time ran out).
    """
    failed = [(i, c) for i, c in zip(instances, codes, strict=True) if c != 0]
    if not failed:
        return None

    def told(item: tuple[_Instance, int]) -> bool:
        return (item[0].root / "output" / "failure").exists()

    return min(failed, key=lambda item: (not told(item), item[1] == -9))


def _archive_hosts(archive: Path, folders: list[tuple[str, Path]]) -> None:
    """One ``tar.gz`` of several hosts' folders merged, as SageMaker aggregates a
    job's ``/opt/ml/model`` (and ``/opt/ml/output/data``); two hosts writing the
    same name is refused, which SageMaker's documentation asks of the job.
    """
    owners: dict[str, str] = {}
    with tarfile.open(archive, "w:gz") as tar:
        for host, folder in folders:
            for path in sorted(folder.rglob("*")):
                name = path.relative_to(folder).as_posix()
                if name in owners and not path.is_dir():
                    raise JobFailed(
                        f"{owners[name]} and {host} both wrote {folder.name}/{name}: "
                        "the hosts of a training job must not write the same file "
                        "(SageMaker packs them all into one archive)"
                    )
                if name in owners:
                    continue
                owners[name] = host
                tar.add(path, arcname=name, recursive=False)


class _HostAddresses:
    """Loopback addresses for the hosts of the training jobs running now.

    Each job's hosts get a block of their own (``127.a.b.1`` ... ``127.a.b.N``; Linux
    routes all of 127.0.0.0/8 to the loopback interface), so a job's tracker listens
    on the fixed port SageMaker jobs use without meeting another job's: two jobs at
    once (tuning trials), or one just after another while the kernel still holds
    the last one's port (TIME_WAIT). Blocks are drawn at random, skipping the ones
    in use or recently used in this process.
    """

    _RECENT = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use: set[int] = set()
        self._recent: list[int] = []
        self._random = random.SystemRandom()

    @contextlib.contextmanager
    def lease(self, hosts: Sequence[str]) -> Iterator[dict[str, str]]:
        if len(hosts) > 254:
            raise JobFailed(
                f"{len(hosts)} instances: the local runner runs at most 254"
            )
        with self._lock:
            taken = self._in_use | set(self._recent)
            block = self._random.randrange(256, 256 * 255)
            while block in taken:
                block = self._random.randrange(256, 256 * 255)
            self._in_use.add(block)
            self._recent = [*self._recent, block][-self._RECENT :]
        try:
            a, b = divmod(block, 256)
            yield {host: f"127.{a}.{b}.{i + 1}" for i, host in enumerate(hosts)}
        finally:
            with self._lock:
                self._in_use.discard(block)


_HOST_ADDRESSES = _HostAddresses()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
