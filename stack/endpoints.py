"""Real-time endpoints: SageMaker hosting, or our inference server on 127.0.0.1.

The three calls mirror SageMaker's (``CreateModel``, ``CreateEndpointConfig``,
``CreateEndpoint``/``UpdateEndpoint``) and take the same requests, so the local runner
hands a pipeline step's arguments to whichever implementation it holds. A local endpoint
is a background process recorded in the state folder: it keeps serving after the command
that deployed it returns, and ``stop`` ends it. A redeploy never takes it down: the
serving process (``inference.supervisor``) loads the new model in new workers beside the
old ones on the same port and switches only once they answer; a model that cannot load
leaves the old one serving, and deploying the model that already serves changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stack.objectstore import ObjectStore
from stack.registry import ModelRegistry

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class EndpointError(Exception):
    """A deployment could not be carried out; the message says why."""


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    config_name: str
    model_name: str
    status: str
    url: str | None = None
    pid: int | None = None
    port: int | None = None
    model_dir: str | None = None
    updated_at: str | None = None
    # sha256 of the model archive: the identity that makes a redeploy of it a no-op
    model_digest: str | None = None
    variant_name: str | None = None


class EndpointDeployer(ABC):
    @abstractmethod
    def create_model(self, request: dict[str, Any]) -> str:
        """``CreateModel``; returns the model name."""

    @abstractmethod
    def create_endpoint_config(self, request: dict[str, Any]) -> str:
        """``CreateEndpointConfig``; returns the config name."""

    @abstractmethod
    def create_or_update_endpoint(self, request: dict[str, Any]) -> EndpointInfo:
        """``CreateEndpoint``, or ``UpdateEndpoint`` when the endpoint exists."""

    @abstractmethod
    def describe(self, endpoint_name: str) -> EndpointInfo | None: ...

    @abstractmethod
    def runtime_client(self) -> Any:
        """A boto3 ``sagemaker-runtime`` client that reaches these endpoints."""


def _model_data_from(
    request: dict[str, Any], registry: ModelRegistry
) -> tuple[str, str, str]:
    """(model data URL, image, package ARN or '') for a CreateModel request."""
    containers = request.get("Containers") or [request.get("PrimaryContainer") or {}]
    container = containers[0]
    package_arn = container.get("ModelPackageName")
    if package_arn:
        package = registry.get(package_arn)
        if package.approval_status != "Approved":
            raise EndpointError(
                f"model package {package_arn} is {package.approval_status}; "
                "only an Approved package is ever deployed"
            )
        return package.model_data_url, package.image_uri, package_arn
    if not container.get("ModelDataUrl"):
        raise EndpointError("CreateModel needs a ModelPackageName or a ModelDataUrl")
    return container["ModelDataUrl"], container.get("Image", ""), ""


class LocalEndpoints(EndpointDeployer):
    def __init__(
        self,
        root: Path,
        store: ObjectStore,
        registry: ModelRegistry,
        host: str = "127.0.0.1",
        port: int = 8080,
        startup_timeout: float = 60.0,
        workers: int = 2,
    ) -> None:
        self.root = root
        self.store = store
        self.registry = registry
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.workers = workers

    def _record(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.json"

    def _write(self, kind: str, name: str, data: dict[str, Any]) -> None:
        path = self._record(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    def _read(self, kind: str, name: str) -> dict[str, Any]:
        path = self._record(kind, name)
        if not path.exists():
            raise EndpointError(f"no {kind[:-1].replace('-', ' ')} named {name!r}")
        return json.loads(path.read_text())

    def create_model(self, request: dict[str, Any]) -> str:
        model_data_url, image, package_arn = _model_data_from(request, self.registry)
        name = request.get("ModelName")
        if not name:
            suffix = (
                package_arn.rsplit("/", 2)[-2:]
                if package_arn
                else [uuid.uuid4().hex[:8]]
            )
            name = "-".join([*suffix, uuid.uuid4().hex[:6]])
        self._write(
            "models",
            name,
            {
                "ModelName": name,
                "ModelPackageName": package_arn,
                "ModelDataUrl": model_data_url,
                "Image": image,
            },
        )
        return name

    def create_endpoint_config(self, request: dict[str, Any]) -> str:
        name = request["EndpointConfigName"]
        variants = request.get("ProductionVariants") or []
        if not variants or not variants[0].get("ModelName"):
            raise EndpointError(
                "CreateEndpointConfig needs ProductionVariants[0].ModelName"
            )
        self._read("models", variants[0]["ModelName"])  # the model must exist
        self._write("endpoint-configs", name, request)
        return name

    def create_or_update_endpoint(self, request: dict[str, Any]) -> EndpointInfo:
        name = request["EndpointName"]
        config_name = request["EndpointConfigName"]
        config = self._read("endpoint-configs", config_name)
        variant = config["ProductionVariants"][0]
        model_name = variant["ModelName"]
        model = self._read("models", model_name)
        model_dir, digest = self._stage_model(model_name, model["ModelDataUrl"])
        current = self.describe(name)
        if current is not None and current.status != "InService":
            current = None
        if current is not None and current.model_digest == digest:
            return current  # this model already serves: nothing to do
        _check_loads(model_dir)  # a model that cannot load never replaces a serving one
        spec = {
            "model_dir": str(model_dir),
            "variant_name": variant.get("VariantName", "AllTraffic"),
            "endpoint_name": name,
            "request": uuid.uuid4().hex,
        }
        self._write_control(name, spec)
        url = f"http://{self.host}:{self.port}"
        if current is not None and current.port != self.port:
            self.stop(name)  # moved to another port: a new address, so a new server
            current = None
        if current is not None and current.pid:
            pid = current.pid  # the serving process swaps workers; the port stays open
            os.kill(pid, signal.SIGHUP)
        else:
            _ensure_port_free(self.host, self.port)
            pid = self._start_server(name)
        try:
            self._wait_until_serving(name, spec["request"], pid)
        except EndpointError:
            if current is None or current.pid != pid:
                _terminate(pid)
            raise
        info = EndpointInfo(
            name=name,
            config_name=config_name,
            model_name=model_name,
            status="InService",
            url=url,
            pid=pid,
            port=self.port,
            model_dir=str(model_dir),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_digest=digest,
            variant_name=spec["variant_name"],
        )
        self._write("endpoints", name, asdict(info))
        return info

    def _server_file(self, name: str, suffix: str) -> Path:
        return self.root / "servers" / f"{name}.{suffix}.json"

    def _write_control(self, name: str, spec: dict[str, Any]) -> None:
        path = self._server_file(name, "control")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(spec, indent=2))
        tmp.replace(path)

    def _wait_until_serving(self, name: str, request_id: str, pid: int) -> None:
        """Wait for the serving process to report the outcome of ``request_id``."""
        status_path = self._server_file(name, "status")
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(status_path.read_text())
                if status.get("request") == request_id:
                    if status["state"] == "serving":
                        return
                    raise EndpointError(
                        f"the endpoint could not load the model: {status['error']} "
                        f"(log: {self._log_path(name)})"
                    )
            if not _alive(pid):
                raise EndpointError(
                    "the endpoint server exited during start-up "
                    f"(log: {self._log_path(name)})"
                )
            time.sleep(0.05)
        raise EndpointError(
            f"the endpoint did not load the model within {self.startup_timeout:.0f} s"
        )

    def _stage_model(self, model_name: str, model_data_url: str) -> tuple[Path, str]:
        from inference.model import unpack_model

        target = self.root / "model-data" / model_name
        archive = target / "model.tar.gz"
        self.store.download_file(model_data_url, archive)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        try:
            return unpack_model(archive, target / "model"), digest
        except (tarfile.TarError, OSError) as exc:
            raise EndpointError(f"cannot unpack {model_data_url}: {exc}") from None

    def _log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def _start_server(self, name: str) -> int:
        log_path = self._log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inference.server",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--control-file",
                    str(self._server_file(name, "control")),
                    "--status-file",
                    str(self._server_file(name, "status")),
                    "--startup-timeout",
                    str(self.startup_timeout),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # outlives the command that deployed it
            )
        return process.pid

    def describe(self, endpoint_name: str) -> EndpointInfo | None:
        path = self._record("endpoints", endpoint_name)
        if not path.exists():
            return None
        info = EndpointInfo(**json.loads(path.read_text()))
        if info.pid is None or not _alive(info.pid):
            return EndpointInfo(**{**asdict(info), "status": "Stopped"})
        return info

    def list_endpoints(self) -> list[EndpointInfo]:
        folder = self.root / "endpoints"
        names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        return [info for n in names if (info := self.describe(n)) is not None]

    def stop(self, endpoint_name: str) -> bool:
        """Stop the endpoint's server if it runs; True if one was stopped."""
        info = self.describe(endpoint_name)
        if info is None or info.status != "InService" or info.pid is None:
            return False
        _terminate(info.pid)
        self._write("endpoints", endpoint_name, {**asdict(info), "status": "Stopped"})
        return True

    def runtime_client(self) -> Any:
        import boto3

        # The local server needs no credentials; boto3 insists on signing with some.
        return boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            endpoint_url=f"http://{self.host}:{self.port}",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106
        )


class SageMakerEndpoints(EndpointDeployer):
    def __init__(self, client: Any, runtime: Any, registry: ModelRegistry) -> None:
        self._client = client
        self._runtime = runtime
        self.registry = registry

    def create_model(self, request: dict[str, Any]) -> str:
        _model_data_from(
            request, self.registry
        )  # refuses packages that are not Approved
        request = dict(request)
        request.setdefault("ModelName", f"churn-{uuid.uuid4().hex[:12]}")
        self._client.create_model(**request)
        return request["ModelName"]

    def create_endpoint_config(self, request: dict[str, Any]) -> str:
        self._client.create_endpoint_config(**request)
        return request["EndpointConfigName"]

    def create_or_update_endpoint(self, request: dict[str, Any]) -> EndpointInfo:
        name = request["EndpointName"]
        config_name = request["EndpointConfigName"]
        if self.describe(name) is None:
            self._client.create_endpoint(
                EndpointName=name, EndpointConfigName=config_name
            )
        else:
            self._client.update_endpoint(
                EndpointName=name, EndpointConfigName=config_name
            )
        info = self.describe(name)
        assert info is not None
        return info

    def describe(self, endpoint_name: str) -> EndpointInfo | None:
        try:
            described = self._client.describe_endpoint(EndpointName=endpoint_name)
        except self._client.exceptions.ClientError:
            return None
        config = self._client.describe_endpoint_config(
            EndpointConfigName=described["EndpointConfigName"]
        )
        return EndpointInfo(
            name=endpoint_name,
            config_name=described["EndpointConfigName"],
            model_name=config["ProductionVariants"][0]["ModelName"],
            status=described["EndpointStatus"],
        )

    def runtime_client(self) -> Any:
        return self._runtime


def _check_loads(model_dir: Path) -> None:
    from inference.model import ModelLoadError, load_model

    try:
        load_model(model_dir)
    except ModelLoadError as exc:
        raise EndpointError(f"the model cannot be served: {exc}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours is not alive
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        if stat.read().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _terminate(pid: int, grace_seconds: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise EndpointError(
                f"port {port} on {host} is in use by another program "
                "(set MLOPS_LOCAL_ENDPOINT__PORT or local_endpoint.port)"
            ) from None
