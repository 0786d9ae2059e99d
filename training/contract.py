"""The SageMaker training container contract, with the ``/opt/ml`` root overridable.

SageMaker writes
``/opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``,
mounts each channel at ``/opt/ml/input/data/<channel>``, uploads ``/opt/ml/model`` as
``model.tar.gz`` and reports ``/opt/ml/output/failure`` as the failure reason. Framework
toolkits also export ``SM_*`` variables; they win where present. The local runner sets
``OPT_ML_ROOT`` to place the tree in a folder of its own.

With several instances, ``resourceconfig.json`` names this host and all of them
(``algo-1`` ... ``algo-N``), which resolve each other by name. Where the local runner
cannot make those names resolve (no sandbox of its own ``/etc/hosts``), it passes
their addresses in ``MLOPS_HOST_ADDRESSES`` (JSON, name to address).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingContract:
    root: Path
    hyperparameters: dict[str, str]
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    current_host: str
    hosts: tuple[str, ...]
    num_cpus: int
    # each channel's S3DistributionType (FullyReplicated or ShardedByS3Key)
    distribution: dict[str, str] = field(default_factory=dict)
    host_addresses: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None
    ) -> TrainingContract:
        environ = os.environ if environ is None else environ
        root = Path(environ.get("OPT_ML_ROOT", "/opt/ml"))
        config = root / "input" / "config"
        hyperparameters = _read_json(config / "hyperparameters.json", {})
        if "SM_HPS" in environ:
            hyperparameters = json.loads(environ["SM_HPS"])
        input_config = _read_json(config / "inputdataconfig.json", {})
        channel_names = list(input_config)
        channels = {
            name: Path(
                environ.get(
                    f"SM_CHANNEL_{name.upper()}", root / "input" / "data" / name
                )
            )
            for name in channel_names
        }
        resource = _read_json(config / "resourceconfig.json", {})
        hosts = (
            json.loads(environ["SM_HOSTS"])
            if "SM_HOSTS" in environ
            else resource.get("hosts", ["algo-1"])
        )
        return cls(
            root=root,
            hyperparameters={k: str(v) for k, v in hyperparameters.items()},
            channels=channels,
            model_dir=Path(environ.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(
                environ.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")
            ),
            current_host=environ.get(
                "SM_CURRENT_HOST", resource.get("current_host", "algo-1")
            ),
            hosts=tuple(hosts),
            num_cpus=int(environ.get("SM_NUM_CPUS", os.cpu_count() or 1)),
            distribution={
                name: str((spec or {}).get("S3DistributionType", "FullyReplicated"))
                for name, spec in input_config.items()
            },
            host_addresses=json.loads(environ.get("MLOPS_HOST_ADDRESSES", "{}")),
        )

    def address_of(self, host: str) -> str:
        """The address of ``host``: resolved by name, as the hosts of a SageMaker
        job resolve each other, unless the local platform gave it.
        """
        return self.host_addresses.get(host) or socket.gethostbyname(host)

    def fail(self, reason: str) -> None:
        failure = self.root / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(reason[:1024])


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default
