"""The approval → deployment hand-off: an AWS Lambda handler for the EventBridge event
``SageMaker Model Package State Change`` of the training registry (dev).

``handle(event, context)`` decides whether the event asks for a deployment and, when
it does, starts the CD with the package ARN: a GitHub ``repository_dispatch``
(event type ``model-approved``, which ``.github/workflows/promote.yml`` runs on) or a
Harness custom webhook trigger. The CD then promotes that package to staging and
prod (``pipelines.promote``), deploys it (``pipelines.approve deploy --package-arn``),
smoke-tests and rolls back on failure. ``infra/approval-deploy.yaml`` holds the rule,
the function and its role.

The decision (``decide``), against the registry as it is now, not the event alone
(SageMaker may send several events per change, and late):
- the package must be Approved *now*: a Rejected or pending package is ignored. A
  rejection never undeploys by itself: the deployers refuse to deploy it again, and
  taking it off an endpoint is ``python -m pipelines.rollback``, a person's call;
- it must be the newest Approved version of its group: approving an older version
  (re-approving v3 while v5 is Approved) deploys nothing, since v5 is what should
  serve. To go back to an older model, reject the newer ones; rejecting the newest
  Approved version does not deploy the one before it (a rollback is a decision);
- a repeated event dispatches again; the CD is idempotent (promotion and deployment
  of what already serves are no-ops).

Why a Lambda and not an EventBridge API destination straight to GitHub: the second
and third rules need a look at the registry, and this way the rule's logic is a
tested Python function fed the event AWS documents.

The Lambda's contract (its environment, set by the template): ``DISPATCH_TARGET``
(``github`` or ``harness``), ``DISPATCH_SECRET_NAME`` (the name of a Secrets Manager
secret in the function's account and region: the GitHub token allowed to dispatch to
the repository, or the Harness webhook URL, which carries its own token),
``GITHUB_REPOSITORY`` (``owner/name``) and optionally ``GITHUB_API_URL`` (GitHub
Enterprise). The secret is read per invocation, never at import, and never logged.
Only the standard library, boto3 (in the Lambda runtime) and ``stack.registry`` are
imported, so the function's archive (``ARCHIVE_FILES``) needs nothing else.

``python -m pipelines.approval_events package --output DIR`` builds that archive, the
same bytes from the same sources (sorted entries, fixed timestamps and modes, stored
uncompressed), and prints ``archive=`` and ``sha256=`` lines for CD
(``.github/workflows/infra.yml``, ``release.yml``'s infra bundle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.registry import ModelRegistry, RegistryError, SageMakerModelRegistry

log = logging.getLogger(__name__)
DETAIL_TYPE = "SageMaker Model Package State Change"
DISPATCH_EVENT = "model-approved"
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_VERSION_TAG = re.compile(r":(v?\d+\.\d+\.\d+[0-9A-Za-z.+-]*)$")
# The function's code: this module, what it imports of the project, and their
# packages' __init__ (paths from the project root, or site-packages when installed).
ARCHIVE_FILES = (
    "pipelines/__init__.py",
    "pipelines/approval_events.py",
    "stack/__init__.py",
    "stack/registry.py",
)
ARCHIVE_NAME = "approval-events.zip"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


class EventError(Exception):
    """The event or the function's settings are not what this handler expects."""


@dataclass(frozen=True)
class Decision:
    deploy: bool
    package_arn: str
    reason: str
    version: str | None = None  # the release the image was built from, if tagged


Dispatch = Callable[[Decision], None]


def decide(event: Mapping[str, Any], registry: ModelRegistry) -> Decision:
    """Whether ``event`` (as EventBridge delivers it) should deploy its package."""
    if event.get("detail-type") != DETAIL_TYPE:
        raise EventError(f"not a {DETAIL_TYPE!r} event: {event.get('detail-type')!r}")
    detail = event.get("detail") or {}
    arn = detail.get("ModelPackageArn")
    group = detail.get("ModelPackageGroupName")
    if not arn or not group:
        raise EventError("the event names no ModelPackageArn and ModelPackageGroupName")
    try:
        package = registry.get(arn)
    except RegistryError as exc:
        raise EventError(str(exc)) from None
    if package.approval_status != "Approved":
        return Decision(False, arn, f"{arn} is {package.approval_status}: ignored")
    newest = registry.latest_approved(group)
    if newest is not None and newest.version > package.version:
        return Decision(
            False,
            arn,
            f"version {package.version} was approved, but version {newest.version} "
            "is the newest Approved one and stays deployed",
        )
    tag = _VERSION_TAG.search(package.image_uri)
    return Decision(
        True,
        arn,
        f"version {package.version} of {group} is the newest Approved",
        version=tag.group(1).lstrip("v") if tag else None,
    )


def process(
    event: Mapping[str, Any], registry: ModelRegistry, dispatch: Dispatch
) -> dict[str, Any]:
    """Decide, dispatch when the decision says so, and return what happened."""
    decision = decide(event, registry)
    log.info("%s", decision.reason)
    if decision.deploy:
        dispatch(decision)
    return {
        "deploy": decision.deploy,
        "package_arn": decision.package_arn,
        "reason": decision.reason,
    }


def github_dispatch(
    repository: str, token: str, api_url: str = "https://api.github.com"
) -> Dispatch:
    """A dispatcher that sends ``repository_dispatch`` (``model-approved``) with the
    package ARN and release version as ``client_payload``.
    """
    if not _REPOSITORY.fullmatch(repository):
        raise EventError(f"GITHUB_REPOSITORY {repository!r} is not owner/name")
    url = f"{api_url.rstrip('/')}/repos/{repository}/dispatches"

    def send(decision: Decision) -> None:
        payload = {"package_arn": decision.package_arn, "version": decision.version}
        _post(
            url,
            {"event_type": DISPATCH_EVENT, "client_payload": payload},
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )

    return send


def harness_dispatch(webhook_url: str) -> Dispatch:
    """A dispatcher that calls a Harness custom webhook trigger; the trigger maps
    ``package_arn`` and ``version`` of the body to the pipeline's inputs.
    """
    if not webhook_url.startswith("https://"):
        raise EventError("the Harness webhook URL must be https://")

    def send(decision: Decision) -> None:
        body = {"package_arn": decision.package_arn, "version": decision.version}
        _post(webhook_url, body, {})

    return send


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    request = urllib.request.Request(  # noqa: S310 - https, or a test's local server
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status >= 300:
            raise EventError(f"the dispatch answered {response.status}")


def dispatcher_from(environ: Mapping[str, str], secrets: Any) -> Dispatch:
    """The dispatcher the Lambda's environment asks for; ``secrets`` is a Secrets
    Manager client, asked once per invocation.
    """
    target = environ.get("DISPATCH_TARGET", "github")
    secret_name = environ.get("DISPATCH_SECRET_NAME")
    if not secret_name:
        raise EventError(
            "DISPATCH_SECRET_NAME is not set (infra/approval-deploy.yaml's "
            "DispatchSecretName)"
        )
    secret = secrets.get_secret_value(SecretId=secret_name)["SecretString"].strip()
    if target == "github":
        return github_dispatch(
            environ.get("GITHUB_REPOSITORY", ""),
            secret,
            environ.get("GITHUB_API_URL", "https://api.github.com"),
        )
    if target == "harness":
        return harness_dispatch(secret)
    raise EventError(f"DISPATCH_TARGET {target!r} is not github or harness")


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: registry and secret clients from the function's own
    credentials and region, settings from its environment.
    """
    import boto3

    registry = SageMakerModelRegistry(boto3.client("sagemaker"))
    dispatch = dispatcher_from(os.environ, boto3.client("secretsmanager"))
    return process(event, registry, dispatch)


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str


def build_archive(output_dir: Path, source_root: Path = _SOURCE_ROOT) -> Archive:
    """Write the function's code archive (``ARCHIVE_FILES`` of ``source_root``) to
    ``output_dir/approval-events.zip``.

    The same sources always give the same bytes, so the archive's SHA-256 names its
    content: entries sorted, the zip epoch as their time, mode 0644, and stored rather
    than deflated (deflate's output depends on the zlib build; the files are small).
    """
    missing = [name for name in ARCHIVE_FILES if not (source_root / name).is_file()]
    if missing:
        raise EventError(
            f"{', '.join(missing)} not found under {source_root}: build the archive "
            "from a checkout or an installed release"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / ARCHIVE_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(ARCHIVE_FILES):
            entry = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            entry.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            entry.create_system = 3  # Unix, wherever it is built
            archive.writestr(entry, (source_root / name).read_bytes())
    return Archive(path, hashlib.sha256(path.read_bytes()).hexdigest())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.approval_events",
        description="The approval-events Lambda's code archive "
        "(infra/approval-deploy.yaml).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    package = commands.add_parser(
        "package",
        help="build the archive; print archive=PATH and sha256=HEX",
    )
    package.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"the folder to write {ARCHIVE_NAME} to (created if missing)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        archive = build_archive(args.output)
    except (EventError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"archive={archive.path}")
    print(f"sha256={archive.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
