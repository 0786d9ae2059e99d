"""The object store: S3, or a local folder addressed with the same ``s3://bucket/key``
URIs.

Both implementations offer the few operations the pipeline needs (copying files and
prefixes in and out, small reads and writes), so callers never know which one they hold.
"""

from __future__ import annotations

import builtins
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ObjectStoreError(Exception):
    """A URI is malformed or an object is missing."""


def split_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ObjectStoreError(f"{uri!r} is not an s3://bucket/key URI")
    key = parsed.path.lstrip("/")
    if ".." in key.split("/"):
        raise ObjectStoreError(f"{uri!r} must not contain '..'")
    return parsed.netloc, key


def join_uri(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *(p.strip("/") for p in parts)])


class ObjectStore(ABC):
    """The subset of S3 the pipeline uses."""

    @abstractmethod
    def upload_file(self, path: Path, uri: str) -> None: ...

    @abstractmethod
    def download_file(self, uri: str, path: Path) -> None: ...

    @abstractmethod
    def list(self, prefix_uri: str) -> builtins.list[str]:
        """URIs of every object under ``prefix_uri``, sorted."""

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def upload_dir(self, directory: Path, prefix_uri: str) -> builtins.list[str]:
        """Copy every file under ``directory`` to ``prefix_uri``, keeping relative
        paths.
        """
        uploaded = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            uri = join_uri(prefix_uri, path.relative_to(directory).as_posix())
            self.upload_file(path, uri)
            uploaded.append(uri)
        return uploaded

    def download_prefix(self, prefix_uri: str, directory: Path) -> builtins.list[Path]:
        """Copy every object under ``prefix_uri`` into ``directory`` (S3Prefix
        semantics).

        A URI that names one object is copied as that file, like SageMaker does for a
        ``ModelArtifacts`` URI given as an S3Prefix input.
        """
        _, prefix_key = split_uri(prefix_uri)
        base = prefix_key.rstrip("/")
        paths = []
        for uri in self.list(prefix_uri):
            _, key = split_uri(uri)
            if key == base:
                relative = key.rsplit("/", 1)[-1]
            elif key.startswith(base + "/") or not base:
                relative = key[len(base) :].lstrip("/")
            else:
                continue  # "prefix/abc" must not match "prefix/abcdef"
            target = directory / relative
            self.download_file(uri, target)
            paths.append(target)
        if not paths:
            raise ObjectStoreError(f"nothing found under {prefix_uri}")
        return paths


class LocalObjectStore(ObjectStore):
    """``s3://bucket/key`` stored as ``<root>/bucket/key``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, uri: str) -> Path:
        bucket, key = split_uri(uri)
        return self.root / bucket / key

    def upload_file(self, path: Path, uri: str) -> None:
        target = self.path_of(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(path, tmp)
        tmp.replace(target)  # readers never see half a file

    def download_file(self, uri: str, path: Path) -> None:
        source = self.path_of(uri)
        if not source.is_file():
            raise ObjectStoreError(f"no such object: {uri}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)

    def list(self, prefix_uri: str) -> builtins.list[str]:
        bucket, key = split_uri(prefix_uri)
        bucket_root = self.root / bucket
        start = self.path_of(prefix_uri)
        search = start if start.is_dir() else start.parent
        if not search.is_dir():
            return []
        found = []
        for path in search.rglob("*"):
            relative = path.relative_to(bucket_root).as_posix()
            if (
                path.is_file()
                and relative.startswith(key)
                and not relative.endswith(".partial")
            ):
                found.append(f"s3://{bucket}/{relative}")
        return sorted(found)

    def read_bytes(self, uri: str) -> bytes:
        source = self.path_of(uri)
        if not source.is_file():
            raise ObjectStoreError(f"no such object: {uri}")
        return source.read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        target = self.path_of(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(target)


class S3ObjectStore(ObjectStore):
    """Amazon S3 (or anything that speaks its API, such as moto) through boto3."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def upload_file(self, path: Path, uri: str) -> None:
        bucket, key = split_uri(uri)
        self._client.upload_file(str(path), bucket, key)

    def download_file(self, uri: str, path: Path) -> None:
        bucket, key = split_uri(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(bucket, key, str(path))
        except self._client.exceptions.ClientError as exc:
            raise ObjectStoreError(f"cannot download {uri}: {exc}") from exc

    def list(self, prefix_uri: str) -> builtins.list[str]:
        bucket, key = split_uri(prefix_uri)
        paginator = self._client.get_paginator("list_objects_v2")
        found: builtins.list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            found.extend(
                f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", [])
            )
        return sorted(found)

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectStoreError(f"no such object: {uri}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_uri(uri)
        self._client.put_object(Bucket=bucket, Key=key, Body=data)
