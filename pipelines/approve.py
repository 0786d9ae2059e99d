"""``python -m pipelines.approve``: list, approve, reject and deploy registered models.

    python -m pipelines.approve list   [--env ENV] [--state-dir DIR] [--group G]
    python -m pipelines.approve set --version N --status Approved|Rejected --reason R
    python -m pipelines.approve deploy --version N     # CD: only an Approved package
    python -m pipelines.approve deploy --package-arn ARN

The options may come before or after the command; a missing or blank ``--reason`` is a
usage error (exit 2), as are a missing ``--version`` and ``--status``, and a
``--package-arn`` that is not a model package version ARN.

``deploy --package-arn`` is the CD's path after an approval (docs/cicd.md): the ARN is
a version of the environment's group, or the training registry's version that
``pipelines.promote`` copied here (found by its ``source_model_package_arn``). It goes
through the deployer's ``deploy_package``: blue/green on SageMaker, waiting until the
new config serves, and a no-op when that package already serves.

It works on the registry the environment's configuration names: the local one under
the state folder, or SageMaker's. Deployment goes through the environment's endpoint
deployer, which refuses a package that is not Approved (``stack.endpoints``); a
Rejected version is therefore never deployed, whoever asks.
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
from pipelines.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipelines.local_runner import serve_from_image
from pipelines.process_gc import run_process
from pipelines.promote import DIGEST_KEY, find_promoted, package_arn_argument
from stack.config import ConfigError, load_config
from stack.endpoints import DeploymentReport, EndpointError, LocalEndpoints
from stack.registry import LOCAL_ROLE, ModelPackage, ModelRegistry, RegistryError
from stack.resources import Resources, build_resources

DECISIONS = ("Approved", "Rejected")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.approve",
        description="List, approve, reject and deploy registered model versions.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    listing = commands.add_parser("list", help="the versions, newest last")
    decide = commands.add_parser("set", help="approve or reject a version")
    decide.add_argument("--version", type=int, required=True)
    decide.add_argument("--status", choices=DECISIONS, required=True)
    decide.add_argument(
        "--reason", type=_reason, required=True, help="kept with the decision"
    )
    deploy = commands.add_parser("deploy", help="deploy an Approved version")
    which = deploy.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int)
    which.add_argument(
        "--package-arn",
        type=package_arn_argument,
        help="a version of this environment's group, or the one promoted here from",
    )
    group: Option = (
        ("--group",),
        {"help": "model package group (default: configured)"},
    )
    add_global_options(
        parser, (listing, decide, deploy), (ENV_OPTION, STATE_DIR_OPTION, group)
    )
    return parser


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a reason: it is kept with the decision")
    return text.strip()


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
    # the config every deploy path builds: variant, instances, data capture
    config_name = endpoints.create_endpoint_config(
        endpoints.endpoint_config_request(name, model)
    )
    if isinstance(endpoints, LocalEndpoints):
        endpoints.use_serving_port(sm.endpoint_name)
    info = endpoints.create_or_update_endpoint(
        {"EndpointName": sm.endpoint_name, "EndpointConfigName": config_name}
    )
    return info.url or info.name


def deploy_package_arn(
    resources: Resources, group: str, package_arn: str
) -> DeploymentReport:
    """Serve the package ``package_arn`` stands for in ``group`` on the configured
    endpoint (see the module doc); RegistryError when the group has no such version.
    """
    package = find_promoted(resources.registry, group, package_arn)
    if package is None:
        raise RegistryError(
            f"{group} has neither {package_arn} nor a version promoted from it: run "
            "python -m pipelines.promote --package-arn ARN --to-env ENV first"
        )
    endpoints = resources.endpoints
    name = resources.config.sagemaker.endpoint_name
    if isinstance(endpoints, LocalEndpoints):
        endpoints.use_serving_port(name)
    return endpoints.deploy_package(package.arn, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    group = args.group or config.sagemaker.model_package_group
    resources = build_resources(config)
    serve_from_image(resources)  # a server it starts runs the image's code
    try:
        if args.action == "list":
            _list(resources.registry.list_versions(group))
        elif args.action == "set":
            package = set_status(
                resources.registry, group, args.version, args.status, args.reason
            )
            print(f"{package.arn}: {package.approval_status} ({args.reason})")
        elif args.package_arn:
            _report(deploy_package_arn(resources, group, args.package_arn), resources)
        else:
            where = deploy_version(resources, group, args.version)
            print(f"deployed version {args.version} of {group} at {where}")
    except (RegistryError, EndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _report(report: DeploymentReport, resources: Resources) -> None:
    """What serves now, with the artifact's SHA-256 for the CD log."""
    package = resources.registry.get(report.package_arn)
    digest = package.customer_metadata.get(DIGEST_KEY, "not recorded")
    verb = "deployed" if report.changed else "already serving"
    print(
        f"{verb}: {report.package_arn} on {report.endpoint.name} "
        f"(config {report.endpoint.config_name}, variant {report.variant_name})"
    )
    print(f"model_sha256={digest}")


def _list(packages: Sequence[ModelPackage]) -> None:
    """A table of the versions: status, creation time, test AUC (4 decimals), as-of
    date and the reason given for the status.
    """
    row = "{:>7}  {:<21}  {:<25}  {:>8}  {:<10}  {}"
    print(row.format("VERSION", "STATUS", "CREATED", "TEST AUC", "AS OF", "REASON"))
    for p in packages:
        meta = p.customer_metadata
        print(
            row.format(
                p.version,
                p.approval_status,
                p.created_at,
                _rounded(meta.get("test_auc")),
                meta.get("as_of_date") or "-",
                p.approval_description or "",
            ).rstrip()
        )


def _rounded(value: str | None) -> str:
    try:
        return f"{float(value):.4f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


if __name__ == "__main__":
    run_process(main)
