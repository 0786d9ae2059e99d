"""Import the SageMaker SDK (v3.27) with its import-time side effects contained.

Measured with sagemaker 3.27.0 (see docs/decisions.md):
- importing ``sagemaker.mlops`` creates boto3 clients and fails without a region, so a
  region is put in the environment first;
- it calls ``logging.basicConfig(level=INFO)``, so the root logger is restored after;
- it sends telemetry unless opted out, so our config file opting out is named first;
- ``ModelTrainer`` validates the role through IAM unless told not to;
- every configuration lookup re-validates the whole SDK config against its JSON schema
  (0.25 s each, 60 lookups per build: 15 s), so a config that passed once is not checked
  again (``_validate_once``).
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import cache
from pathlib import Path
from types import SimpleNamespace

_CONFIG = Path(__file__).with_name("sagemaker_config.yaml")


@cache
def load_sdk(region: str) -> SimpleNamespace:
    """Import the SDK pieces the definition uses; the first call takes a few seconds."""
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(_CONFIG))
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
    _validate_once()
    root.handlers[:] = handlers
    root.setLevel(level)
    for noisy in ("sagemaker", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return SimpleNamespace(**{k: v for k, v in locals().items() if k[0].isupper()})


def _validate_once() -> None:
    """Memoise SageMakerConfig.validate_sagemaker_config by the config's content."""
    import json

    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.validate_sagemaker_config
    if getattr(original, "_memoised", False):
        return
    passed: set[str] = set()

    def validate(sagemaker_config: dict | None = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in passed:
            original(sagemaker_config)  # raises on an invalid config, as before
            passed.add(key)

    validate._memoised = True  # type: ignore[attr-defined]
    SageMakerConfig.validate_sagemaker_config = staticmethod(validate)  # type: ignore[method-assign]
