"""``python -m pipelines.rollback --env ENV``: the endpoint back to the config that
served before the current one, and optionally the Snowflake objects back to a release.

    python -m pipelines.rollback --env staging
    python -m pipelines.rollback --env prod --only-if-serving ARN
    python -m pipelines.rollback --env prod --snowflake-release 1.4.2

The endpoint: every deploy tags the config it switches to with the config it replaced
(``stack.endpoints.REPLACES_TAG``); rollback switches back to that one (blue/green on
SageMaker, with the configured policy), waits until it serves, and prints the package
it serves again. Running it twice goes two steps back.

``--only-if-serving ARN`` is for a CD's failure path: roll back only when the endpoint
serves that package (or the one promoted from it), that is when the failed deployment
got as far as switching. A deployment that SageMaker already rolled back by itself
(an alarm during the bake) or that never switched leaves the endpoint as it was, and
rolling back then would remove a good model: exit 0, nothing done.

The Snowflake objects: the deployer (``python -m snowflake.sagemaker_predictions
deploy``) deploys the release it belongs to, whose code lives in its own folder on the
code stage; so going back to release V is running V's deployer. ``--snowflake-release
V`` checks that V is the installed release (exit 2 before any call otherwise, with
the install command), then runs its deployer after the endpoint. A CD that has only
the new release installed runs the previous release's deployer from a second
environment instead (``.github/workflows/promote-env.yml``).

Exit codes: 0 rolled back (or nothing to do with --only-if-serving), 1 failed, 2 usage.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from pipelines.arguments import ENV_OPTION, STATE_DIR_OPTION, add_global_options
from pipelines.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipelines.process_gc import run_process
from pipelines.promote import find_promoted, package_arn_argument
from snowflake.sagemaker_predictions.__main__ import main as snowflake_main
from snowflake.sagemaker_predictions.procedure_code import (
    DISTRIBUTION,
    release_version,
)
from stack.config import ConfigError, load_config
from stack.endpoints import EndpointError, EndpointInfo, LocalEndpoints
from stack.registry import RegistryError
from stack.resources import Resources, build_resources

_RELEASE = re.compile(r"^\d+(\.\d+){1,3}([.+-]?[0-9A-Za-z.]+)?$")


def rollback_endpoint(resources: Resources, only_if_serving: str | None) -> str:
    """Roll the configured endpoint back one step; returns what happened."""
    name = resources.config.sagemaker.endpoint_name
    endpoints = resources.endpoints
    if only_if_serving is not None and not _serves(resources, name, only_if_serving):
        return f"{name} does not serve {only_if_serving}: nothing rolled back"
    if isinstance(endpoints, LocalEndpoints):
        endpoints.use_serving_port(name)
    info: EndpointInfo = endpoints.rollback(name)
    serving = endpoints.serving_package(name) or "a model not from a package"
    return f"{name} rolled back to {info.config_name}: serves {serving}"


def _serves(resources: Resources, name: str, package_arn: str) -> bool:
    serving = resources.endpoints.serving_package(name)
    if serving is None:
        return False
    group = resources.config.sagemaker.model_package_group
    package = find_promoted(resources.registry, group, package_arn)
    return serving in (package_arn, package.arn if package else None)


def _release(text: str) -> str:
    if not _RELEASE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a release version")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.rollback",
        description="Roll the endpoint back to its previous config, and the Snowflake "
        "objects to a release.",
    )
    parser.add_argument(
        "--only-if-serving",
        type=package_arn_argument,
        metavar="ARN",
        help="act only when the endpoint serves this package (a CD's failure path)",
    )
    parser.add_argument(
        "--snowflake-release",
        type=_release,
        metavar="VERSION",
        help="redeploy the Snowflake objects of this release (must be the installed "
        "one)",
    )
    add_global_options(parser, (), (ENV_OPTION, STATE_DIR_OPTION))
    return parser


def _check_installed(version: str) -> None:
    installed = release_version()
    if installed != version:
        raise ConfigError(
            f"the Snowflake deployer deploys its own release, and {installed} is "
            f"installed: run this from an environment with release {version} "
            f"(pip install {DISTRIBUTION}=={version})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.env, {"state_dir": args.state_dir})
        if args.snowflake_release:
            _check_installed(args.snowflake_release)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(rollback_endpoint(build_resources(config), args.only_if_serving))
    except (EndpointError, RegistryError) as exc:
        print(f"error: rollback: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.snowflake_release:
        return snowflake_main(["deploy", "--env", config.env])
    return EXIT_OK


if __name__ == "__main__":
    run_process(main)
