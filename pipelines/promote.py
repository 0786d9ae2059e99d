"""``python -m pipelines.promote --package-arn ARN --to-env ENV``: promote an Approved
model package from the training environment's registry to another environment's.

The model is trained and registered once, in dev (``--from-env``, the training
account); staging and prod get *that* model, never one of their own. Promotion copies
the package: the model archive (and the evaluation report and monitoring baselines it
names) into the target environment's bucket, checked byte for byte by SHA-256, and a
new version in the target's model package group with the same image, the copied
archive, the source's metadata plus ``source_model_package_arn`` and
``model_sha256``, already Approved (the approval was given in the source registry;
the gate before prod is the CD's own review, see docs/cicd.md).

Why a copy and not a cross-account policy on the source group only: the target then
owns everything its endpoint reads (its bucket, its key, its registry), so dev's
lifecycle rules or a deleted dev object never break staging or prod, and the target's
endpoint role needs no access to the training account. Reading the source still goes
through AWS's documented cross-account pattern: a resource policy on dev's model
package group and a bucket policy on dev's artifacts let the target account describe
the package and read its files.

Promoting again is a no-op: the target version whose ``source_model_package_arn`` and
``model_sha256`` match is reused. Prints ``KEY=VALUE`` lines (``model_sha256``,
``source_package_arn``, ``target_package_arn``) that a CD step can append to
``$GITHUB_OUTPUT``. Exit codes: 0 promoted (or already), 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stack.resources
from pipelines.process_gc import run_process
from stack.config import DEFAULT_AWS_ENV, ENVIRONMENTS, Config, ConfigError, load_config
from stack.objectstore import ObjectStore, ObjectStoreError, join_uri
from stack.registry import ModelPackage, ModelRegistry, RegistryError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SOURCE_KEY = "source_model_package_arn"
DIGEST_KEY = "model_sha256"
# arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION (a versioned package)
PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]{9,16}:\d{12}:"
    r"model-package/[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}/\d{1,9}$"
)
_CHUNK = 1 << 20


class PromotionError(Exception):
    """The package cannot be promoted; the message says why."""


@dataclass(frozen=True)
class Promotion:
    source: ModelPackage
    target: ModelPackage
    model_sha256: str
    changed: bool  # False: the target registry had this package already


def package_arn_argument(text: str) -> str:
    """``text`` if it is a versioned model package ARN (an argparse ``type``: the
    error names what is wrong, for every command that takes ``--package-arn``)."""
    if not PACKAGE_ARN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model package version ARN "
            "(arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION)"
        )
    return text


def promote(
    package_arn: str,
    source: tuple[ModelRegistry, ObjectStore],
    target: tuple[ModelRegistry, ObjectStore],
    target_group: str,
    target_root: str,
) -> Promotion:
    """Copy the Approved package ``package_arn`` into ``target_group``.

    Args:
        source: the training environment's registry and object store.
        target: the target environment's registry and object store.
        target_root: where the target keeps artifacts (``s3://bucket/prefix``).
    """
    source_registry, source_store = source
    target_registry, target_store = target
    package = source_registry.get(package_arn)
    if package.approval_status != "Approved":
        raise PromotionError(
            f"{package_arn} is {package.approval_status}: only an Approved package is "
            "promoted"
        )
    if not package.model_data_url:
        raise PromotionError(f"{package_arn} names no model archive (ModelDataUrl)")
    folder = join_uri(
        target_root, "promoted", package.group, str(package.version)
    ).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        _download(source_store, package.model_data_url, archive)
        digest = sha256_of(archive)
        existing = find_promoted(target_registry, target_group, package.arn)
        if (
            existing is not None
            and existing.customer_metadata.get(DIGEST_KEY) == digest
        ):
            return Promotion(package, existing, digest, changed=False)
        model_url = f"{folder}/model.tar.gz"
        target_store.upload_file(archive, model_url)
        _verify(target_store, model_url, digest, Path(tmp) / "check.tar.gz")
        copies = {
            uri: _copy(source_store, target_store, uri, f"{folder}/{name}", Path(tmp))
            for name, uri in _side_files(package)
        }
    request = _register_request(package, target_group, model_url, digest, copies)
    return Promotion(package, target_registry.register(request), digest, changed=True)


def find_promoted(
    registry: ModelRegistry, group: str, package_arn: str
) -> ModelPackage | None:
    """The version of ``group`` that is ``package_arn`` or was promoted from it (the
    newest such), else None.
    """
    found = None
    for package in registry.list_versions(group):
        if package_arn in (package.arn, package.customer_metadata.get(SOURCE_KEY)):
            found = package
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(store: ObjectStore, uri: str, path: Path) -> None:
    try:
        store.download_file(uri, path)
    except ObjectStoreError as exc:
        raise PromotionError(f"cannot read {uri}: {exc}") from None


def _verify(store: ObjectStore, uri: str, digest: str, scratch: Path) -> None:
    """Read back what was written: the target serves these bytes, not ours."""
    _download(store, uri, scratch)
    if sha256_of(scratch) != digest:
        raise PromotionError(f"{uri} does not have the source's SHA-256 {digest}")


def _side_files(package: ModelPackage) -> list[tuple[str, str]]:
    """(file name, URI) of the package's report and baselines, when it names them."""
    named = (
        ("evaluation.json", package.metrics_uri),
        ("statistics.json", package.baseline_statistics_uri),
        ("constraints.json", package.baseline_constraints_uri),
    )
    return [(name, uri) for name, uri in named if uri]


def _copy(
    source: ObjectStore, target: ObjectStore, uri: str, to: str, tmp: Path
) -> str:
    path = tmp / to.rsplit("/", 1)[-1]
    _download(source, uri, path)
    target.upload_file(path, to)
    return to


def _register_request(
    package: ModelPackage,
    group: str,
    model_url: str,
    digest: str,
    copies: dict[str, str],
) -> dict[str, Any]:
    """The CreateModelPackage request of the copy in the target registry."""
    metadata = {
        **package.customer_metadata,
        SOURCE_KEY: package.arn,
        DIGEST_KEY: digest,
    }
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": f"promoted from {package.arn}",
        "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {
            "Containers": [{"Image": package.image_uri, "ModelDataUrl": model_url}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "CustomerMetadataProperties": metadata,
    }
    if package.metrics_uri:
        request["ModelMetrics"] = {
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": copies[package.metrics_uri],
                }
            }
        }
    baselines = {
        key: {"ContentType": "application/json", "S3Uri": copies[uri]}
        for key, uri in (
            ("Statistics", package.baseline_statistics_uri),
            ("Constraints", package.baseline_constraints_uri),
        )
        if uri
    }
    if baselines:
        request["DriftCheckBaselines"] = {"ModelDataQuality": baselines}
    return request


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.promote",
        description="Copy an Approved model package from the training environment's "
        "registry to another environment's, with its artifact checked by SHA-256.",
    )
    parser.add_argument("--package-arn", type=package_arn_argument, required=True)
    parser.add_argument(
        "--to-env", choices=("staging", "prod"), required=True, help="where to"
    )
    parser.add_argument(
        "--from-env",
        choices=[e for e in ENVIRONMENTS if e not in ("staging", "prod")],
        default=DEFAULT_AWS_ENV,
        help=f"the environment that trains and registers (default: {DEFAULT_AWS_ENV})",
    )
    return parser


def _resources(config: Config) -> tuple[ModelRegistry, ObjectStore]:
    resources = stack.resources.build_resources(config)
    return resources.registry, resources.store


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        source_config = load_config(args.from_env)
        target_config = load_config(args.to_env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = promote(
            args.package_arn,
            _resources(source_config),
            _resources(target_config),
            target_config.sagemaker.model_package_group,
            target_config.artifact_root,
        )
    except (PromotionError, RegistryError, ObjectStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "promoted" if result.changed else "already promoted"
    print(f"# {verb} to {args.to_env}: {result.target.model_data_url}", file=sys.stderr)
    print(f"model_sha256={result.model_sha256}")
    print(f"source_package_arn={result.source.arn}")
    print(f"target_package_arn={result.target.arn}")
    return EXIT_OK


if __name__ == "__main__":
    run_process(main)
