"""The object store: S3, or a local folder addressed with the same ``s3://bucket/key``
URIs.

Both implementations offer the few operations the pipeline needs (copying files and
prefixes in and out, small reads and writes), so callers never know which one they hold.
"""

from __future__ import annotations

import builtins
import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class ObjectStoreError(Exception):
    """A URI is malformed or an object is missing."""


class ObjectNotFound(ObjectStoreError):
    """The object does not exist (or was deleted between a listing and a read)."""


# S3's bucket naming rules (general purpose buckets): 3 to 63 characters of lowercase
# letters, digits, dots and hyphens, a letter or digit at each end, no two dots in a
# row, not an IP address, none of the reserved prefixes and suffixes.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
MAX_KEY_BYTES = 1024


def check_bucket(bucket: str) -> str:
    """``bucket`` if S3 would accept it as a bucket name, else ObjectStoreError."""
    problem = None
    if not _BUCKET.fullmatch(bucket):
        problem = (
            "3 to 63 lowercase letters, digits, dots and hyphens, starting and ending "
            "with a letter or digit"
        )
    elif ".." in bucket:
        problem = "no two dots in a row"
    elif _IP_ADDRESS.fullmatch(bucket):
        problem = "not an IP address"
    elif bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        problem = "not a reserved prefix or suffix"
    if problem:
        raise ObjectStoreError(f"{bucket!r} is not a valid S3 bucket name ({problem})")
    return bucket


def split_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty.

    The key is everything after the bucket, as S3 takes it (``?`` and ``#`` included);
    ``.`` and ``..`` segments are refused, so no key names a place above its bucket.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ObjectStoreError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    check_bucket(bucket)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ObjectStoreError(f"{uri[:80]!r}...: a key is at most 1024 bytes")
    if "\x00" in key:
        raise ObjectStoreError(f"{uri!r}: a key cannot hold a NUL character")
    if {".", ".."} & set(key.split("/")):
        raise ObjectStoreError(f"{uri!r} must not contain '.' or '..' segments")
    return bucket, key


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
        """Where ``uri`` lives under the root; keys a folder cannot hold (an empty or
        over-long segment, which S3 would take) are refused by name."""
        bucket, key = split_uri(uri)
        segments = key.split("/")
        if "" in segments[:-1]:
            raise ObjectStoreError(f"{uri!r}: the local store holds no '//' in a key")
        if any(len(part.encode()) > 255 for part in segments):
            raise ObjectStoreError(
                f"{uri[:80]!r}...: the local store holds key segments of at most 255 "
                "bytes"
            )
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
        try:
            return self.path_of(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no such object: {uri}") from None

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
            raise ObjectNotFound(f"no such object: {uri}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_uri(uri)
        self._client.put_object(Bucket=bucket, Key=key, Body=data)
