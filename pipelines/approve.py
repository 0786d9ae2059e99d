"""``python -m pipelines.approve``: list, approve, reject and deploy registered models.

    python -m pipelines.approve list   [--env ENV]
    python -m pipelines.approve set --version N --status Approved|Rejected --reason R
    python -m pipelines.approve deploy --version N     # CD: only an Approved package

It works on the registry the environment's configuration names: the local one under
the state folder, or SageMaker's. Deployment goes through the environment's endpoint
deployer, which refuses a package that is not Approved (``stack.endpoints``); a
Rejected version is therefore never deployed, whoever asks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.definition import LOCAL_ROLE
from pipelines.local_runner import serve_from_image
from stack.config import ConfigError, load_config
from stack.endpoints import EndpointError
from stack.registry import ModelPackage, ModelRegistry, RegistryError
from stack.resources import Resources, build_resources

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DECISIONS = ("Approved", "Rejected")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.approve")
    parser.add_argument("action", choices=["list", "set", "deploy"])
    parser.add_argument("--env", default=None, help="configuration environment")
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--group", default=None, help="model package group")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--status", choices=DECISIONS, default=None)
    parser.add_argument("--reason", default="")
    return parser


def find_version(registry: ModelRegistry, group: str, version: int) -> ModelPackage:
    for package in registry.list_versions(group):
        if package.version == version:
            return package
    raise RegistryError(f"{group} has no version {version}")


def set_status(
    registry: ModelRegistry, group: str, version: int, status: str, reason: str
) -> ModelPackage:
    """Approve or reject ``version`` of ``group``, with the reason on record."""
    if status not in DECISIONS:
        raise RegistryError(f"status must be one of {', '.join(DECISIONS)}")
    if not reason.strip():
        raise RegistryError("give a --reason: it is kept with the decision")
    package = find_version(registry, group, version)
    return registry.set_approval(package.arn, status, reason.strip())


def deploy_version(resources: Resources, group: str, version: int) -> str:
    """CreateModel from the package → EndpointConfig → Endpoint; returns where."""
    package = find_version(resources.registry, group, version)
    if package.approval_status != "Approved":  # the deployer checks again
        raise EndpointError(
            f"version {version} of {group} is {package.approval_status}; "
            "only an Approved package is ever deployed"
        )
    sm = resources.config.sagemaker
    endpoints = resources.endpoints
    name = f"{sm.endpoint_name}-v{version}"
    model = endpoints.create_model(
        {
            "ModelName": name,
            "ExecutionRoleArn": resources.config.aws.role_arn or LOCAL_ROLE,
            "Containers": [{"ModelPackageName": package.arn}],
        }
    )
    config_name = endpoints.create_endpoint_config(
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "InitialInstanceCount": sm.endpoint_instance_count,
                    "InstanceType": sm.endpoint_instance_type,
                }
            ],
        }
    )
    info = endpoints.create_or_update_endpoint(
        {"EndpointName": sm.endpoint_name, "EndpointConfigName": config_name}
    )
    return info.url or info.name


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    group = args.group or config.sagemaker.model_package_group
    if args.action != "list" and args.version is None:
        print(f"error: {args.action} needs --version", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "set" and args.status is None:
        print("error: set needs --status Approved|Rejected", file=sys.stderr)
        return EXIT_USAGE
    resources = build_resources(config)
    serve_from_image(resources)  # a server it starts runs the image's code
    try:
        if args.action == "list":
            for p in resources.registry.list_versions(group):
                print(
                    f"{p.version:>4}  {p.approval_status:<22} {p.created_at}  "
                    f"auc={p.customer_metadata.get('test_auc', '?')}  "
                    f"{p.approval_description or ''}"
                )
        elif args.action == "set":
            package = set_status(
                resources.registry, group, args.version, args.status, args.reason
            )
            print(f"{package.arn}: {package.approval_status} ({args.reason.strip()})")
        else:
            where = deploy_version(resources, group, args.version)
            print(f"deployed version {args.version} of {group} at {where}")
    except (RegistryError, EndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
