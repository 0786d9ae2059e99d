"""``python -m pipelines.endpoint {status,stop,deploy}``: manage endpoints.

``deploy`` serves an Approved model package (``--package ARN``, default: the newest
Approved version in the configured group) on the environment's endpoint: a local server
that swaps models without downtime, or SageMaker with the configured blue/green policy
and rollback alarms. ``status`` and ``stop`` manage the local server process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.arguments import (
    ENV_OPTION,
    STATE_DIR_OPTION,
    Option,
    add_global_options,
)
from pipelines.local_runner import serve_from_image
from pipelines.process_gc import run_process
from stack.config import ConfigError, load_config
from stack.endpoints import EndpointError, LocalEndpoints
from stack.resources import Resources, build_resources


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.endpoint",
        description="Status, stop and deploy of the environment's endpoint.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    status = commands.add_parser("status", help="the local endpoints and their model")
    stop = commands.add_parser("stop", help="stop the local endpoint's server")
    deploy = commands.add_parser("deploy", help="serve an Approved model package")
    deploy.add_argument(
        "--package", help="model package ARN (default: the newest Approved)"
    )
    name: Option = (("--name",), {"help": "endpoint name (default: configured)"})
    add_global_options(
        parser, (status, stop, deploy), (ENV_OPTION, STATE_DIR_OPTION, name)
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    resources = build_resources(config)
    serve_from_image(resources)  # a server it starts runs the image's code
    endpoints = resources.endpoints
    if args.action == "deploy":
        name = args.name or config.sagemaker.endpoint_name
        return _deploy(resources, name, args.package)
    if not isinstance(endpoints, LocalEndpoints):
        print(
            f"error: the {config.env} environment has no local endpoint",
            file=sys.stderr,
        )
        return 2
    names = [args.name] if args.name else [e.name for e in endpoints.list_endpoints()]
    if not names:
        print("no local endpoints")
        return 0
    for name in names:
        if args.action == "stop":
            print(f"{name}: {'stopped' if endpoints.stop(name) else 'was not running'}")
        else:
            info = endpoints.describe(name)
            if info is None:
                print(f"{name}: unknown")
            else:
                print(
                    f"{name}: {info.status} {info.url or ''} pid={info.pid} "
                    f"model={info.model_name}"
                    + (
                        " (its server process is gone; the next deploy restarts it "
                        "on this port)"
                        if info.status == "Failed"
                        else ""
                    )
                )
    return 0


def _deploy(resources: Resources, endpoint_name: str, package_arn: str | None) -> int:
    group = resources.config.sagemaker.model_package_group
    if package_arn is None:
        package = resources.registry.latest_approved(group)
        if package is None:
            print(f"error: no Approved model package in {group}", file=sys.stderr)
            return 1
        package_arn = package.arn
    if isinstance(resources.endpoints, LocalEndpoints):
        resources.endpoints.use_serving_port(endpoint_name)
    try:
        report = resources.endpoints.deploy_package(package_arn, endpoint_name)
    except EndpointError as exc:
        print(f"error: deploy failed: {exc}", file=sys.stderr)
        return 1
    info = report.endpoint
    what = "deployed" if report.changed else "already serving (nothing changed)"
    print(
        f"{info.name}: {what}: {package_arn} on variant {report.variant_name} "
        f"({info.status}{', ' + info.url if info.url else ''})"
    )
    return 0


if __name__ == "__main__":
    run_process(main)
