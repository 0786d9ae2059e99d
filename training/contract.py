"""The SageMaker training container contract, with the ``/opt/ml`` root overridable.

SageMaker writes
``/opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``,
mounts each channel at ``/opt/ml/input/data/<channel>``, uploads ``/opt/ml/model`` as
``model.tar.gz`` and reports ``/opt/ml/output/failure`` as the failure reason. Framework
toolkits also export ``SM_*`` variables; they win where present. The local runner sets
``OPT_ML_ROOT`` to place the tree in a folder of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
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
        channel_names = list(_read_json(config / "inputdataconfig.json", {}))
        channels = {
            name: Path(
                environ.get(
                    f"SM_CHANNEL_{name.upper()}", root / "input" / "data" / name
                )
            )
            for name in channel_names
        }
        resource = _read_json(config / "resourceconfig.json", {})
        return cls(
            root=root,
            hyperparameters={k: str(v) for k, v in hyperparameters.items()},
            channels=channels,
            model_dir=Path(environ.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(
                environ.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")
            ),
            current_host=resource.get("current_host", "algo-1"),
            hosts=tuple(resource.get("hosts", ["algo-1"])),
            num_cpus=int(environ.get("SM_NUM_CPUS", os.cpu_count() or 1)),
        )

    def fail(self, reason: str) -> None:
        failure = self.root / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(reason[:1024])


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default
