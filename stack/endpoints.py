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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference import artifact
from stack.config import DeploymentConfig
from stack.objectstore import LocalObjectStore, ObjectStore, ObjectStoreError
from stack.registry import ModelRegistry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# How long the workers of a server that died may hold its port: they notice within
# a second and drain what they hold (inference.worker), well within SageMaker's 30 s.
_ORPHAN_SECONDS = 30.0
# How long a redeploy may wait, after the new workers load, for the old ones to stop
# accepting (inference.supervisor waits up to 25 s, then kills a stuck one).
_RETIRE_SECONDS = 30.0
# The tag an endpoint config gets when it first replaces another on an endpoint: the
# config it replaced. Configs are never changed or deleted by us, so the tags form the
# endpoint's history, and a rollback walks it one step back.
REPLACES_TAG = "mlops:replaces"


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


@dataclass(frozen=True)
class DeploymentReport:
    endpoint: EndpointInfo
    changed: bool  # False: the package already served, nothing was touched
    package_arn: str
    variant_name: str | None


class EndpointDeployer(ABC):
    @abstractmethod
    def create_model(self, request: dict[str, Any]) -> str:
        """``CreateModel``; returns the model name."""

    @abstractmethod
    def create_endpoint_config(self, request: dict[str, Any]) -> str:
        """``CreateEndpointConfig``; returns the config name."""

    @abstractmethod
    def endpoint_config_request(self, name: str, model_name: str) -> dict[str, Any]:
        """The ``CreateEndpointConfig`` request every deploy path sends (one variant,
        data capture when configured), built by ``endpoint_config_request``.
        """

    @abstractmethod
    def create_or_update_endpoint(self, request: dict[str, Any]) -> EndpointInfo:
        """``CreateEndpoint``, or ``UpdateEndpoint`` when the endpoint exists."""

    @abstractmethod
    def describe(self, endpoint_name: str) -> EndpointInfo | None: ...

    @abstractmethod
    def rollback(self, endpoint_name: str) -> EndpointInfo:
        """Serve again the endpoint config the current one replaced (its
        ``REPLACES_TAG``), and wait until it serves; EndpointError when there is none.
        """

    @abstractmethod
    def runtime_client(self) -> Any:
        """A boto3 ``sagemaker-runtime`` client that reaches these endpoints."""

    @abstractmethod
    def serving_package(self, endpoint_name: str) -> str | None:
        """The model package ARN the endpoint serves (None: not from a package, or no
        such endpoint).
        """

    @abstractmethod
    def deploy_package(self, package_arn: str, endpoint_name: str) -> DeploymentReport:
        """Serve an Approved model package on ``endpoint_name`` (created if missing).

        Builds a new model and endpoint config from the package, switches the endpoint
        to it without taking it down, waits, and reports what serves. A no-op when the
        package already serves there.
        """


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


ServerLauncher = Callable[[list[str]], tuple[list[str], dict[str, str]]]


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
        data_capture: dict[str, Any] | None = None,
        capture_flush_seconds: float = 1.0,
        capture_max_mb: int | None = None,
        capture_retention_hours: int | None = None,
    ) -> None:
        self.root = root.resolve()  # the server runs in another folder
        self.store = store
        self.registry = registry
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.workers = workers
        # DataCaptureConfig of the configs deploy_package builds (the pipeline's
        # EndpointConfig step brings its own)
        self.data_capture = data_capture
        self.capture_flush_seconds = capture_flush_seconds  # how often workers write
        # what the workers keep of it (deployment.data_capture_max_mb and
        # data_capture_retention_hours; None: the server's defaults)
        self.capture_max_mb = capture_max_mb
        self.capture_retention_hours = capture_retention_hours
        # Turns the server's command (``python -m inference.server ...``) into the argv
        # and environment that start it; None: this interpreter and the source tree.
        # The local runner sets it to start the server from the staged image
        # (pipelines.local_jobs.Container.server_command).
        self.server_launcher: ServerLauncher | None = None

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

    def endpoint_config_request(self, name: str, model_name: str) -> dict[str, Any]:
        return endpoint_config_request(
            name, model_name, "AllTraffic", self.data_capture
        )

    def create_or_update_endpoint(self, request: dict[str, Any]) -> EndpointInfo:
        current = self.describe(request["EndpointName"])
        if current is not None:
            self._remember_predecessor(
                request["EndpointConfigName"], current.config_name
            )
        return self._serve(request)

    def _remember_predecessor(self, config_name: str, previous: str) -> None:
        """Tag ``config_name`` with the config it replaces, the first time only (a
        rollback to it must not rewrite its history).
        """
        config = self._read("endpoint-configs", config_name)
        tags = config.get("Tags") or []
        if previous == config_name or any(t["Key"] == REPLACES_TAG for t in tags):
            return
        config["Tags"] = [*tags, {"Key": REPLACES_TAG, "Value": previous}]
        self._write("endpoint-configs", config_name, config)

    def rollback(self, endpoint_name: str) -> EndpointInfo:
        current = self.describe(endpoint_name)
        if current is None:
            raise EndpointError(f"endpoint {endpoint_name} does not exist")
        tags = self._read("endpoint-configs", current.config_name).get("Tags") or []
        previous = _replaced(tags)
        if previous is None:
            raise EndpointError(_nothing_before(endpoint_name, current.config_name))
        self._read("endpoint-configs", previous)  # still there
        self.use_serving_port(endpoint_name)
        return self._serve(
            {"EndpointName": endpoint_name, "EndpointConfigName": previous}
        )

    def _serve(self, request: dict[str, Any]) -> EndpointInfo:
        name = request["EndpointName"]
        config_name = request["EndpointConfigName"]
        config = self._read("endpoint-configs", config_name)
        variant = config["ProductionVariants"][0]
        model_name = variant["ModelName"]
        model = self._read("models", model_name)
        # what the workers are given besides the model: capture, and the code they
        # run (a code change reloads them even when the model is the same)
        serving = self._capture_spec(config) | self._worker_spec()
        model_dir, digest = self._stage_model(model_name, model["ModelDataUrl"])
        current = self.describe(name)
        # a server that died leaves workers that drain what they hold, then exit
        died_here = (
            current is not None
            and current.status == "Failed"
            and current.port == self.port
        )
        if current is not None and current.status != "InService":
            current = None
        if (
            current is not None
            and current.model_digest == digest
            and current.port == self.port
            and self._serving_spec(name, serving) == serving
        ):
            # these model bytes already serve: no reload, but the endpoint now runs
            # on the new config, as SageMaker's UpdateEndpoint would report
            if (current.config_name, current.model_name) == (config_name, model_name):
                return current
            moved = replace(current, config_name=config_name, model_name=model_name)
            self._write("endpoints", name, asdict(moved))
            return moved
        _check_loads(model_dir)  # a model that cannot load never replaces a serving one
        spec = {
            "model_dir": str(model_dir),
            "variant_name": variant.get("VariantName", "AllTraffic"),
            "endpoint_name": name,
            "request": uuid.uuid4().hex,
            **serving,
        }
        previous = self._control_text(name)
        self._write_control(name, spec)
        try:
            pid, port = self._switch(
                name, spec["request"], current, _ORPHAN_SECONDS if died_here else 0
            )
        except EndpointError:
            self._restore_control(name, previous)  # what serves is what it names
            raise
        url = f"http://{self.host}:{port}"
        info = EndpointInfo(
            name=name,
            config_name=config_name,
            model_name=model_name,
            status="InService",
            url=url,
            pid=pid,
            port=port,
            model_dir=str(model_dir),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_digest=digest,
            variant_name=spec["variant_name"],
        )
        self._write("endpoints", name, asdict(info))
        return info

    def _switch(
        self,
        name: str,
        request_id: str,
        current: EndpointInfo | None,
        port_wait: float = 0,
    ) -> tuple[int, int]:
        """Make the model of the control file serve; returns (pid, port).

        Atomic: on any failure (a model that cannot load, a port taken, a server that
        dies) the old model still serves where it served, and EndpointError says why.
        On the port it serves, the serving process loads the new model in new workers
        and retires the old ones only once those accept (SIGHUP). On another port (or
        with nothing serving) a new server starts, answers /ping, and only then is the
        old one stopped.
        """
        if current is not None and current.pid and current.port == self.port:
            try:
                os.kill(current.pid, signal.SIGHUP)
            except ProcessLookupError:
                raise EndpointError(
                    f"the endpoint's server (pid {current.pid}) is gone; deploy again "
                    "to start a new one"
                ) from None
            self._wait_until_serving(name, request_id, current.pid)
            return current.pid, self.port
        _ensure_port_free(self.host, self.port, port_wait)
        pid = self._start_server(name)
        try:
            self._wait_until_serving(name, request_id, pid)
            _ping(self.host, self.port)
        except EndpointError:
            _terminate(pid)
            raise
        if current is not None and current.pid:
            _terminate(current.pid)  # moved: the old address closes only now
        return pid, self.port

    def use_serving_port(self, endpoint_name: str) -> None:
        """Deploy ``endpoint_name`` on the port it has (serving, or its server died),
        not the configured one: a deploy swaps the model where clients reach it and
        never moves the endpoint. Only an endpoint stopped on purpose (``stop``) or
        never deployed starts on the configured port.
        """
        info = self.describe(endpoint_name)
        if info is not None and info.port and info.status != "Stopped":
            self.port = info.port

    def _control_text(self, name: str) -> str | None:
        path = self._server_file(name, "control")
        return path.read_text() if path.exists() else None

    def _restore_control(self, name: str, text: str | None) -> None:
        path = self._server_file(name, "control")
        if text is None:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".partial")
            tmp.write_text(text)
            tmp.replace(path)

    def _capture_spec(self, config: dict[str, Any]) -> dict[str, Any]:
        """The control file's data capture keys for an endpoint config: its
        DataCaptureConfig and the local folder of its DestinationS3Uri.
        """
        capture = config.get("DataCaptureConfig")
        if not capture or not capture.get("EnableCapture", True):
            return {
                "data_capture_config": None,
                "data_capture_dir": None,
                "data_capture_flush_seconds": self.capture_flush_seconds,
                "data_capture_max_mb": None,
                "data_capture_retention_hours": None,
            }
        if not isinstance(self.store, LocalObjectStore):
            raise EndpointError(
                "data capture on a local endpoint writes to the local object store "
                "(resources.object_store: local); unset "
                "deployment.data_capture_s3_uri for this environment"
            )
        try:
            directory = self.store.path_of(capture["DestinationS3Uri"])
        except (KeyError, ObjectStoreError) as exc:
            raise EndpointError(
                f"DataCaptureConfig.DestinationS3Uri is not usable: {exc}"
            ) from None
        return {
            "data_capture_config": capture,
            "data_capture_dir": str(directory),
            "data_capture_flush_seconds": self.capture_flush_seconds,
            "data_capture_max_mb": self.capture_max_mb,
            "data_capture_retention_hours": self.capture_retention_hours,
        }

    def _serving_spec(self, name: str, wanted: dict[str, Any]) -> dict[str, Any]:
        """The values of ``wanted``'s keys the serving process was last given."""
        try:
            control = json.loads(self._server_file(name, "control").read_text())
        except (OSError, ValueError):
            control = {}
        defaults = {"data_capture_flush_seconds": self.capture_flush_seconds}
        return {key: control.get(key, defaults.get(key)) for key in wanted}

    def _serves_current_code(self, name: str) -> bool:
        """The serving workers run the code a new generation would run."""
        wanted = self._worker_spec()
        return self._serving_spec(name, wanted) == wanted

    def _worker_spec(self) -> dict[str, Any]:
        """The interpreter and environment a new generation of workers starts with:
        the code a server started now would run (the staged image's, when the
        launcher says so), so that a redeploy after a code change serves the new code
        even though the serving supervisor keeps running.
        """
        argv, env = self._launch(["python", "-m", "inference.worker"])
        return {"worker_python": argv[0], "worker_env": env}

    def _launch(self, command: list[str]) -> tuple[list[str], dict[str, str]]:
        if self.server_launcher is not None:
            return self.server_launcher(command)
        return [sys.executable, *command[1:]], _server_environment()

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
        deadline = time.monotonic() + self.startup_timeout + _RETIRE_SECONDS
        while time.monotonic() < deadline:
            alive = _alive(pid)  # first: a server writes its outcome, then exits
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(status_path.read_text())
                if status.get("request") == request_id:
                    if status["state"] == "serving":
                        return
                    raise EndpointError(
                        f"the endpoint could not serve the model: {status['error']} "
                        f"(log: {self._log_path(name)})"
                    )
            if not alive:
                raise EndpointError(
                    "the endpoint server exited during start-up "
                    f"(log: {self._log_path(name)})"
                )
            time.sleep(0.05)
        raise EndpointError(
            f"the endpoint did not load the model within {self.startup_timeout:.0f} s"
        )

    def _stage_model(self, model_name: str, model_data_url: str) -> tuple[Path, str]:
        target = self.root / "model-data" / model_name
        archive = target / artifact.ARCHIVE
        self.store.download_file(model_data_url, archive)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        try:
            return artifact.unpack(archive, target / "model"), digest
        except (tarfile.TarError, OSError) as exc:
            raise EndpointError(f"cannot unpack {model_data_url}: {exc}") from None

    def _log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def _start_server(self, name: str) -> int:
        log_path = self._log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            "python",
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
        ]
        argv, env = self._launch(command)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=log_path.parent,  # not the caller's folder: python -m imports it
                start_new_session=True,  # outlives the command that deployed it
            )
        return process.pid

    def check_port(self, endpoint_name: str) -> None:
        """Fail now (EndpointError) if deploying ``endpoint_name`` would find its port
        taken: the port is free, or this endpoint serves there already (a redeploy
        swaps the model in place). Lets a run stop before its first step, not at
        Deploy.
        """
        current = self.describe(endpoint_name)
        if current and current.status == "InService" and current.port == self.port:
            return
        died_here = current and current.status == "Failed" and current.port == self.port
        _ensure_port_free(self.host, self.port, _ORPHAN_SECONDS if died_here else 0)

    def describe(self, endpoint_name: str) -> EndpointInfo | None:
        path = self._record("endpoints", endpoint_name)
        if not path.exists():
            return None
        info = EndpointInfo(**json.loads(path.read_text()))
        if info.status == "InService" and (
            info.pid is None
            or not _is_server(info.pid, self._server_file(endpoint_name, "control"))
        ):
            # the server died (killed, the machine rebooted): Failed until a deploy
            # starts it again on its port
            return replace(info, status="Failed")
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
        return local_runtime_client(f"http://{self.host}:{self.port}")

    def serving_package(self, endpoint_name: str) -> str | None:
        info = self.describe(endpoint_name)
        if info is None or not self._record("models", info.model_name).exists():
            return None
        return self._read("models", info.model_name).get("ModelPackageName") or None

    def deploy_package(self, package_arn: str, endpoint_name: str) -> DeploymentReport:
        current = self.describe(endpoint_name)
        if (
            current is not None
            and current.status == "InService"
            and self.serving_package(endpoint_name) == package_arn
            and self._serves_current_code(endpoint_name)
        ):
            return DeploymentReport(
                endpoint=current,
                changed=False,
                package_arn=package_arn,
                variant_name=current.variant_name,
            )
        model_name = self.create_model(
            {"Containers": [{"ModelPackageName": package_arn}]}
        )
        config_name = self.create_endpoint_config(
            self.endpoint_config_request(f"{model_name}-config", model_name)
        )
        info = self.create_or_update_endpoint(
            {"EndpointName": endpoint_name, "EndpointConfigName": config_name}
        )
        return DeploymentReport(
            endpoint=info,
            changed=True,
            package_arn=package_arn,
            variant_name=info.variant_name,
        )


class SageMakerEndpoints(EndpointDeployer):
    """SageMaker hosting. Updates are blue/green (all at once, canary or linear, from
    ``DeploymentConfig``) with automatic rollback on the configured CloudWatch alarms:
    SageMaker keeps the old fleet serving until the new one is healthy, and shifts
    traffic back if an alarm fires during the bake time.
    """

    def __init__(
        self,
        client: Any,
        runtime: Any,
        registry: ModelRegistry,
        deployment: DeploymentConfig | None = None,
        role_arn: str | None = None,
        instance_type: str = "ml.m5.large",
        instance_count: int = 1,
        poll_seconds: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._runtime = runtime
        self.registry = registry
        self.deployment = deployment or DeploymentConfig()
        self.role_arn = role_arn
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.poll_seconds = poll_seconds
        self._sleep = sleep

    def create_model(self, request: dict[str, Any]) -> str:
        # refuses packages that are not Approved
        _model_data_from(request, self.registry)
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
        current = self.describe(name)
        if current is None:
            self._client.create_endpoint(
                EndpointName=name, EndpointConfigName=config_name
            )
        elif current.status == "InService" and self._source_of_config(
            current.config_name
        ) == self._source_of_config(config_name):
            return current  # the same model already serves: nothing to do
        else:
            self._remember_predecessor(config_name, current.config_name)
            self._update(name, config_name)
        info = self.describe(name)
        assert info is not None
        return info

    def _update(self, name: str, config_name: str) -> None:
        self._client.update_endpoint(
            EndpointName=name,
            EndpointConfigName=config_name,
            RetainAllVariantProperties=False,
            DeploymentConfig=self.deployment_config(),
        )

    def _config_tags(self, config_name: str) -> tuple[str, list[dict[str, str]]]:
        """(ARN, tags) of an endpoint config; EndpointError when it is gone."""
        try:
            arn = self._client.describe_endpoint_config(EndpointConfigName=config_name)[
                "EndpointConfigArn"
            ]
        except self._client.exceptions.ClientError:
            raise EndpointError(
                f"endpoint config {config_name} does not exist"
            ) from None
        return arn, self._client.list_tags(ResourceArn=arn).get("Tags") or []

    def _remember_predecessor(self, config_name: str, previous: str) -> None:
        """Tag ``config_name`` with the config it replaces, the first time only (a
        rollback to it must not rewrite its history).
        """
        arn, tags = self._config_tags(config_name)
        if previous == config_name or _replaced(tags) is not None:
            return
        self._client.add_tags(
            ResourceArn=arn, Tags=[{"Key": REPLACES_TAG, "Value": previous}]
        )

    def rollback(self, endpoint_name: str) -> EndpointInfo:
        current = self.describe(endpoint_name)
        if current is None:
            raise EndpointError(f"endpoint {endpoint_name} does not exist")
        previous = _replaced(self._config_tags(current.config_name)[1])
        if previous is None:
            raise EndpointError(_nothing_before(endpoint_name, current.config_name))
        self._config_tags(previous)  # still there
        self._update(endpoint_name, previous)
        self._wait_until_serving(endpoint_name, previous)
        info = self.describe(endpoint_name)
        assert info is not None
        return info

    def deployment_config(self) -> dict[str, Any]:
        """``DeploymentConfig`` for UpdateEndpoint, from ``deployment`` settings."""
        settings = self.deployment
        routing: dict[str, Any] = {
            "Type": settings.strategy.upper(),
            "WaitIntervalInSeconds": settings.wait_interval_seconds,
        }
        if settings.strategy == "canary":
            routing["CanarySize"] = {
                "Type": "CAPACITY_PERCENT",
                "Value": settings.canary_percent,
            }
        elif settings.strategy == "linear":
            routing["LinearStepSize"] = {
                "Type": "CAPACITY_PERCENT",
                "Value": settings.linear_step_percent,
            }
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": settings.termination_wait_seconds,
                "MaximumExecutionTimeoutInSeconds": settings.max_execution_seconds,
            }
        }
        if settings.rollback_alarms:
            config["AutoRollbackConfiguration"] = {
                "Alarms": [{"AlarmName": a} for a in settings.rollback_alarms]
            }
        return config

    def endpoint_config_request(self, name: str, model_name: str) -> dict[str, Any]:
        return endpoint_config_request(
            name,
            model_name,
            self.deployment.variant_name,
            data_capture_config(self.deployment),
            instance=(self.instance_type, self.instance_count),
        )

    def deploy_package(self, package_arn: str, endpoint_name: str) -> DeploymentReport:
        request = {"PrimaryContainer": {"ModelPackageName": package_arn}}
        _model_data_from(request, self.registry)  # Approved, or refused here
        current = self.describe(endpoint_name)
        if (
            current is not None
            and current.status == "InService"
            and self._source_of_config(current.config_name) == (package_arn,)
        ):
            return self._report(endpoint_name, package_arn, changed=False)
        if not self.role_arn:
            raise EndpointError(
                "aws.role_arn is not set: SageMaker needs an execution role for the "
                "model (set MLOPS_AWS__ROLE_ARN or conf/<env>.yaml)"
            )
        stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        base = endpoint_name[: 63 - len(stamp) - 8]
        model_name = self.create_model(
            {
                "ModelName": f"{base}-{stamp}",
                **request,
                "ExecutionRoleArn": self.role_arn,
            }
        )
        config_name = self.create_endpoint_config(
            self.endpoint_config_request(f"{base}-{stamp}-config", model_name)
        )
        self.create_or_update_endpoint(
            {"EndpointName": endpoint_name, "EndpointConfigName": config_name}
        )
        self._wait_until_serving(endpoint_name, config_name)
        return self._report(endpoint_name, package_arn, changed=True)

    def _wait_until_serving(self, name: str, config_name: str) -> None:
        """Poll until the endpoint is InService on ``config_name``; a rollback, a
        failure or the timeout raise EndpointError naming the reason.
        """
        deadline = time.monotonic() + self.deployment.wait_timeout_seconds
        while True:
            described = self._client.describe_endpoint(EndpointName=name)
            status = described["EndpointStatus"]
            reason = described.get("FailureReason") or "no reason given"
            if status == "InService":
                if described["EndpointConfigName"] == config_name:
                    return
                raise EndpointError(
                    f"the update of endpoint {name} was rolled back ({reason}); "
                    f"{described['EndpointConfigName']} still serves"
                )
            if status in ("Failed", "UpdateRollbackFailed", "OutOfService"):
                raise EndpointError(f"endpoint {name} is {status}: {reason}")
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"endpoint {name} still {status} after "
                    f"{self.deployment.wait_timeout_seconds} s"
                )
            self._sleep(self.poll_seconds)

    def _report(self, name: str, package_arn: str, changed: bool) -> DeploymentReport:
        described = self._client.describe_endpoint(EndpointName=name)
        variants = described.get("ProductionVariants") or [{}]
        info = self.describe(name)
        assert info is not None
        return DeploymentReport(
            endpoint=info,
            changed=changed,
            package_arn=package_arn,
            variant_name=variants[0].get("VariantName"),
        )

    def _source_of_config(self, config_name: str) -> tuple[str, ...]:
        """What a config serves: its model's package ARN, else (image, model data)."""
        config = self._client.describe_endpoint_config(EndpointConfigName=config_name)
        model = self._client.describe_model(
            ModelName=config["ProductionVariants"][0]["ModelName"]
        )
        containers = model.get("Containers") or [{}]
        container = model.get("PrimaryContainer") or containers[0]
        if container.get("ModelPackageName"):
            return (container["ModelPackageName"],)
        return (container.get("Image", ""), container.get("ModelDataUrl", ""))

    def describe(self, endpoint_name: str) -> EndpointInfo | None:
        try:
            described = self._client.describe_endpoint(EndpointName=endpoint_name)
        except self._client.exceptions.ClientError:
            return None
        config = self._client.describe_endpoint_config(
            EndpointConfigName=described["EndpointConfigName"]
        )
        variant = config["ProductionVariants"][0]
        return EndpointInfo(
            name=endpoint_name,
            config_name=described["EndpointConfigName"],
            model_name=variant["ModelName"],
            status=described["EndpointStatus"],
            variant_name=variant.get("VariantName"),
        )

    def runtime_client(self) -> Any:
        return self._runtime

    def serving_package(self, endpoint_name: str) -> str | None:
        info = self.describe(endpoint_name)
        if info is None:
            return None
        source = self._source_of_config(info.config_name)
        return source[0] if len(source) == 1 else None


def _replaced(tags: list[dict[str, str]]) -> str | None:
    """The config named by ``REPLACES_TAG`` among an endpoint config's tags."""
    return next((t["Value"] for t in tags if t["Key"] == REPLACES_TAG), None)


def _nothing_before(endpoint_name: str, config_name: str) -> str:
    return (
        f"nothing to roll back to: {config_name}, which endpoint {endpoint_name} "
        f"serves, replaced no other config (its {REPLACES_TAG} tag is missing)"
    )


# botocore's retries off for runtime clients: inference.client.EndpointClient, which
# drives them, retries each call itself (and what botocore does not: a model
# container's 5xx, ModelNotReadyException); both would multiply the attempts
RUNTIME_RETRIES = {"total_max_attempts": 1}


def local_runtime_client(url: str) -> Any:
    """A boto3 ``sagemaker-runtime`` client for our inference server at ``url``."""
    import boto3
    from botocore.config import Config

    # The local server needs no credentials; boto3 insists on signing with some.
    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106
        config=Config(retries=RUNTIME_RETRIES),
    )


# What the server takes from the deployer's environment: where programs are, the
# locale and time zone. Nothing else (Snowflake or AWS credentials, MLOPS_*): the
# server reads its model and settings from its arguments and control file.
_SERVER_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


def _server_environment() -> dict[str, str]:
    """The environment of a server started from this interpreter and source tree."""
    env = {k: os.environ[k] for k in _SERVER_VARIABLES if k in os.environ}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def _check_loads(model_dir: Path) -> None:
    from inference.model import (
        ModelLoadError,
        import_xgboost_without_scikit_learn,
        load_model,
    )

    import_xgboost_without_scikit_learn()  # as the workers do: 0.3 s, not 1.5 s
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


def _is_server(pid: int, control_file: Path) -> bool:
    """``pid`` is alive and is the server driven by ``control_file``, not a process
    that got the pid of a server that died (after a reboot, say): a deploy sends the
    recorded pid SIGHUP and ``stop`` SIGTERM, which would end that process instead.
    """
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: the pid is all there is to go by
    return os.fsencode(str(control_file)) in argv


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


def _ping(host: str, port: int) -> None:
    """/ping answers 200 at ``host:port``, else EndpointError."""
    import urllib.request

    url = f"http://{host}:{port}/ping"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - ours
            if response.status == 200:
                return
            raise EndpointError(f"{url} answered {response.status}")
    except OSError as exc:
        raise EndpointError(f"{url} did not answer: {exc}") from None


def _ensure_port_free(host: str, port: int, wait: float = 0) -> None:
    """EndpointError unless ``port`` is free, within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError:
                if time.monotonic() >= deadline:
                    break
        time.sleep(0.1)
    raise EndpointError(
        f"port {port} on {host} is in use by another program "
        "(set MLOPS_LOCAL_ENDPOINT__PORT or local_endpoint.port)"
    )


def endpoint_config_request(
    name: str,
    model_name: str,
    variant_name: str,
    data_capture: dict[str, Any] | None,
    instance: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """``CreateEndpointConfig`` for one variant serving ``model_name``, with
    ``DataCaptureConfig`` when given: the one builder of every deploy path (the
    deployers' ``deploy_package``, ``pipelines.approve deploy``). ``instance`` is
    (type, count), which SageMaker needs and the local server ignores.
    """
    variant: dict[str, Any] = {"VariantName": variant_name, "ModelName": model_name}
    if instance is not None:
        variant |= {
            "InstanceType": instance[0],
            "InitialInstanceCount": instance[1],
            "InitialVariantWeight": 1.0,
        }
    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [variant],
    }
    if data_capture:
        request["DataCaptureConfig"] = data_capture
    return request


def data_capture_config(settings: DeploymentConfig) -> dict[str, Any] | None:
    """``DataCaptureConfig`` of an endpoint config (requests and responses), or None
    when ``deployment.data_capture_s3_uri`` is not set.
    """
    if not settings.data_capture_s3_uri:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": settings.data_capture_percent,
        "DestinationS3Uri": settings.data_capture_s3_uri,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json"],
        },
    }
