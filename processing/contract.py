"""The SageMaker processing container contract, with the ``/opt/ml`` root overridable.

SageMaker mounts inputs and outputs under ``/opt/ml/processing/``, describes the cluster
in ``/opt/ml/config/resourceconfig.json`` and turns ``/opt/ml/output/message`` into the
job's failure reason. The local runner sets ``OPT_ML_ROOT`` to place all of this in a
folder of its own; in a real container the variable is absent and the root is
``/opt/ml``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.config import Config

DEFAULT_ROOT = "/opt/ml"
FIRST_READ = "first read"


def log_first_read(logger: logging.Logger, what: str) -> None:
    """Log, with its time, that the job begins its work: its first query or read.

    ``benchmarks.loop`` measures a job's start-up from its process's start to this
    line, so each entry point logs it once, just before it first reads its inputs.
    """
    logger.info("%s: %s", FIRST_READ, what)


def command_config(
    env: str | None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The configuration of a command that also runs as a pipeline job.

    Inside a processing job it is what the job's request carries and nothing else
    (``load_job_config``: no ``conf/*.yaml``, as on SageMaker); run by a person, it is
    ``load_config(env)``, with the files and ``MLOPS_*`` variables.
    """
    from stack.config import load_config, load_job_config

    if ProcessingContract.from_environment().in_job:
        return load_job_config(overrides)
    return load_config(env, overrides)


@dataclass(frozen=True)
class ProcessingContract:
    root: Path
    current_host: str
    hosts: tuple[str, ...]

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None
    ) -> ProcessingContract:
        environ = os.environ if environ is None else environ
        root = Path(environ.get("OPT_ML_ROOT", DEFAULT_ROOT))
        resource_file = root / "config" / "resourceconfig.json"
        host, hosts = "algo-1", ("algo-1",)
        if resource_file.exists():
            resource = json.loads(resource_file.read_text())
            host = resource.get("current_host", host)
            hosts = tuple(resource.get("hosts", hosts))
        return cls(root=root, current_host=host, hosts=hosts)

    def path(self, container_path: str) -> Path:
        """Map a path the definition names (``/opt/ml/processing/...``) under the
        root.
        """
        if not container_path.startswith(DEFAULT_ROOT + "/"):
            raise ValueError(f"{container_path} is not under {DEFAULT_ROOT}")
        return self.root / container_path[len(DEFAULT_ROOT) + 1 :]

    def output_uris(self) -> dict[str, str]:
        """Each output's S3 URI by name, from ``processingjobconfig.json`` (the
        CreateProcessingJob request, which SageMaker places in every container).
        """
        config_file = self.root / "config" / "processingjobconfig.json"
        if not config_file.exists():
            return {}
        request = json.loads(config_file.read_text())
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        return {o["OutputName"]: o["S3Output"]["S3Uri"] for o in outputs}

    @property
    def in_job(self) -> bool:
        """True inside a processing job: SageMaker (and the local runner) put the
        job's request in ``/opt/ml/config/processingjobconfig.json``.
        """
        return (self.root / "config" / "processingjobconfig.json").is_file()

    @property
    def host_index(self) -> int:
        return self.hosts.index(self.current_host)

    def fail(self, reason: str) -> None:
        """Record ``reason`` where SageMaker reads a failed job's message."""
        message = self.root / "output" / "message"
        message.parent.mkdir(parents=True, exist_ok=True)
        message.write_text(reason[:1024])
