"""``python -m pipelines.smoke [--env ENV] [--name ENDPOINT]``: is the endpoint scoring?

The deployment's last check (deploy.yml, the Harness pipeline): the endpoint must be
InService and answer one request in Snowflake's external-function format, the one the
API Gateway forwards, with one score between 0 and 1 for row 0. The request row has
every feature at 0.0, a value every feature accepts.
Exit codes: 0 scoring; 1 not InService, or a wrong or failed answer; 2 configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import stack.resources
from pipelines.process_gc import run_process
from stack.config import ConfigError, load_config


class SmokeError(Exception):
    """The endpoint is not serving as it should; the message says how."""


def smoke_test(endpoints: Any, name: str, n_features: int) -> float:
    """Describe ``name`` on ``endpoints`` (an EndpointDeployer), score one row, and
    return the score; raise SmokeError when anything is off.
    """
    info = endpoints.describe(name)
    if info is None:
        raise SmokeError(f"endpoint {name} does not exist")
    if info.status != "InService":
        raise SmokeError(f"endpoint {name} is {info.status}, not InService")
    body = json.dumps({"data": [[0] + [0.0] * n_features]}).encode()
    try:
        answer = endpoints.runtime_client().invoke_endpoint(
            EndpointName=name,
            ContentType="application/json",
            Accept="application/json",
            Body=body,
        )
        payload = json.loads(answer["Body"].read())
    except Exception as exc:  # any failure to answer is the finding
        raise SmokeError(f"endpoint {name} did not answer: {exc}") from exc
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not (isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 2):
        raise SmokeError(f"endpoint {name} answered {str(payload)[:200]!r}")
    row_number, score = rows[0]
    if row_number != 0 or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise SmokeError(f"endpoint {name} answered {rows[0]!r} for row 0")
    return float(score)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.smoke")
    parser.add_argument("--env", default=None, help="local (default) ... prod")
    parser.add_argument("--name", default=None, help="endpoint (default: configured)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from features import load_feature_set

    name = args.name or config.sagemaker.endpoint_name
    schema = load_feature_set(config.features.feature_set).schema
    try:
        score = smoke_test(
            stack.resources.build_resources(config).endpoints,
            name,
            len(schema.features),
        )
    except SmokeError as exc:
        print(f"error: smoke test failed: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: InService, scored one row ({score:.4f})")
    return 0


if __name__ == "__main__":
    run_process(main)
