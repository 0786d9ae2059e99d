"""The model registry: SageMaker's, or a local store with the same semantics.

Model package groups hold numbered versions; each version has an approval status
(``Approved``, ``PendingManualApproval``, ``Rejected``), its model data and image, and
its metrics. ``register`` takes the same request as SageMaker's ``CreateModelPackage``,
so the local runner passes a RegisterModel step's arguments through unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

APPROVAL_STATUSES = ("Approved", "PendingManualApproval", "Rejected")
LOCAL_ACCOUNT = "000000000000"
# An ARN-shaped execution role in the placeholder account, for the request shapes of
# local runs; never sent to AWS (an AWS environment needs the real role).
LOCAL_ROLE = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/local-execution"


class RegistryError(Exception):
    """A package or group is missing, or a request is malformed."""


@dataclass(frozen=True)
class ModelPackage:
    arn: str
    group: str
    version: int
    approval_status: str
    image_uri: str
    model_data_url: str
    created_at: str
    metrics_uri: str | None = None
    customer_metadata: dict[str, str] = field(default_factory=dict)
    approval_description: str | None = None
    # DriftCheckBaselines.ModelDataQuality: the training baseline (monitoring/)
    baseline_statistics_uri: str | None = None
    baseline_constraints_uri: str | None = None


class ModelRegistry(ABC):
    @abstractmethod
    def register(self, request: dict[str, Any]) -> ModelPackage:
        """Create a new version from a ``CreateModelPackage`` request."""

    @abstractmethod
    def get(self, arn: str) -> ModelPackage: ...

    @abstractmethod
    def list_versions(self, group: str) -> list[ModelPackage]:
        """Every version of ``group``, oldest first."""

    @abstractmethod
    def set_approval(
        self, arn: str, status: str, description: str = ""
    ) -> ModelPackage: ...

    def latest_approved(self, group: str) -> ModelPackage | None:
        approved = [
            p for p in self.list_versions(group) if p.approval_status == "Approved"
        ]
        return approved[-1] if approved else None


def _check_request(request: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    group = request.get("ModelPackageGroupName")
    if not group:
        raise RegistryError("CreateModelPackage needs ModelPackageGroupName")
    containers = request.get("InferenceSpecification", {}).get("Containers") or []
    if not containers or not containers[0].get("Image"):
        raise RegistryError(
            "CreateModelPackage needs InferenceSpecification.Containers[0].Image"
        )
    status = request.get("ModelApprovalStatus", "PendingManualApproval")
    if status not in APPROVAL_STATUSES:
        raise RegistryError(
            f"ModelApprovalStatus {status!r} is not one of "
            f"{', '.join(APPROVAL_STATUSES)}"
        )
    return group, containers[0], status


def _check_status(status: str) -> None:
    if status not in APPROVAL_STATUSES:
        raise RegistryError(
            f"approval status {status!r} is not one of {', '.join(APPROVAL_STATUSES)}"
        )


def _metrics_uri(request: dict[str, Any]) -> str | None:
    statistics = (
        request.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
    )
    return statistics.get("S3Uri")


def _baseline_uris(request: dict[str, Any]) -> dict[str, str | None]:
    quality = request.get("DriftCheckBaselines", {}).get("ModelDataQuality", {})
    return {
        "baseline_statistics_uri": quality.get("Statistics", {}).get("S3Uri"),
        "baseline_constraints_uri": quality.get("Constraints", {}).get("S3Uri"),
    }


class LocalModelRegistry(ModelRegistry):
    """Versions kept as JSON files: ``<root>/<group>/<version>.json``."""

    def __init__(self, root: Path, region: str) -> None:
        self.root = root
        self.region = region

    def _arn(self, group: str, version: int) -> str:
        return (
            f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:"
            f"model-package/{group}/{version}"
        )

    @contextlib.contextmanager
    def _locked(self, group: str) -> Iterator[Path]:
        directory = self.root / group
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(
                lock, fcntl.LOCK_EX
            )  # concurrent registrations get distinct versions
            yield directory

    def register(self, request: dict[str, Any]) -> ModelPackage:
        group, container, status = _check_request(request)
        with self._locked(group) as directory:
            version = len(list(directory.glob("*.json"))) + 1
            package = ModelPackage(
                arn=self._arn(group, version),
                group=group,
                version=version,
                approval_status=status,
                image_uri=container["Image"],
                model_data_url=container.get("ModelDataUrl", ""),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                metrics_uri=_metrics_uri(request),
                customer_metadata=dict(request.get("CustomerMetadataProperties", {})),
                **_baseline_uris(request),
            )
            self._save(package)
        return package

    def _save(self, package: ModelPackage) -> None:
        path = self.root / package.group / f"{package.version}.json"
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(asdict(package), indent=2))
        tmp.replace(path)

    def get(self, arn: str) -> ModelPackage:
        try:
            group, version = arn.split(":model-package/", 1)[1].rsplit("/", 1)
            data = json.loads((self.root / group / f"{int(version)}.json").read_text())
        except (IndexError, ValueError, FileNotFoundError):
            raise RegistryError(f"no such model package: {arn}") from None
        return ModelPackage(**data)

    def list_versions(self, group: str) -> list[ModelPackage]:
        directory = self.root / group
        if not directory.is_dir():
            return []
        versions = sorted(int(p.stem) for p in directory.glob("*.json"))
        return [self.get(self._arn(group, v)) for v in versions]

    def set_approval(
        self, arn: str, status: str, description: str = ""
    ) -> ModelPackage:
        _check_status(status)
        package = self.get(arn)
        with self._locked(package.group):
            updated = ModelPackage(
                **{
                    **asdict(package),
                    "approval_status": status,
                    "approval_description": description or None,
                }
            )
            self._save(updated)
        return updated


class SageMakerModelRegistry(ModelRegistry):
    """SageMaker's model registry through boto3 (moto in tests)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def register(self, request: dict[str, Any]) -> ModelPackage:
        group, _, _ = _check_request(request)
        try:
            self._client.describe_model_package_group(ModelPackageGroupName=group)
        except self._client.exceptions.ClientError:
            self._client.create_model_package_group(ModelPackageGroupName=group)
        arn = self._client.create_model_package(**request)["ModelPackageArn"]
        return self.get(arn)

    def get(self, arn: str) -> ModelPackage:
        try:
            described = self._client.describe_model_package(ModelPackageName=arn)
        except self._client.exceptions.ClientError as exc:
            raise RegistryError(f"no such model package: {arn}") from exc
        return _from_description(described)

    def list_versions(self, group: str) -> list[ModelPackage]:
        paginator = self._client.get_paginator("list_model_packages")
        arns: list[str] = []
        for page in paginator.paginate(
            ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Ascending"
        ):
            arns.extend(
                item["ModelPackageArn"] for item in page["ModelPackageSummaryList"]
            )
        return [self.get(arn) for arn in arns]

    def set_approval(
        self, arn: str, status: str, description: str = ""
    ) -> ModelPackage:
        _check_status(status)
        kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
        if description:
            kwargs["ApprovalDescription"] = description
        self._client.update_model_package(**kwargs)
        return self.get(arn)


def _from_description(described: dict[str, Any]) -> ModelPackage:
    container = described.get("InferenceSpecification", {}).get("Containers", [{}])[0]
    created: Any = described.get("CreationTime")
    return ModelPackage(
        arn=described["ModelPackageArn"],
        group=described.get("ModelPackageGroupName", ""),
        version=int(described.get("ModelPackageVersion", 0)),
        approval_status=described.get("ModelApprovalStatus", "PendingManualApproval"),
        image_uri=container.get("Image", ""),
        model_data_url=container.get("ModelDataUrl", ""),
        created_at=created.isoformat()
        if hasattr(created, "isoformat")
        else str(created),
        metrics_uri=_metrics_uri(described),
        customer_metadata=dict(described.get("CustomerMetadataProperties", {})),
        approval_description=described.get("ApprovalDescription"),
        **_baseline_uris(described),
    )
