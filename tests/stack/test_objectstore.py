from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from stack.objectstore import (
    LocalObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    split_uri,
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, aws_credentials):
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "s3")
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket")
        yield S3ObjectStore(client)


def test_round_trip_and_prefix_listing(store, tmp_path: Path):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("b")
    uploaded = store.upload_dir(source, "s3://bucket/run/features")
    assert uploaded == [
        "s3://bucket/run/features/a.txt",
        "s3://bucket/run/features/sub/b.txt",
    ]
    store.write_bytes("s3://bucket/run/featuresX/other.txt", b"x")
    # a prefix means a folder: "features" must not pick up "featuresX"
    out = store.download_prefix("s3://bucket/run/features", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == [
        "a.txt",
        "sub/b.txt",
    ]
    assert store.read_bytes("s3://bucket/run/featuresX/other.txt") == b"x"


def test_single_object_prefix_downloads_that_file(store, tmp_path: Path):
    store.write_bytes("s3://bucket/model/output/model.tar.gz", b"tar")
    paths = store.download_prefix(
        "s3://bucket/model/output/model.tar.gz", tmp_path / "m"
    )
    assert [p.name for p in paths] == ["model.tar.gz"]


def test_missing_objects_are_reported(store, tmp_path: Path):
    with pytest.raises(ObjectStoreError, match="nothing found"):
        store.download_prefix("s3://bucket/nothing/here", tmp_path / "x")
    with pytest.raises(ObjectStoreError):
        store.read_bytes("s3://bucket/nothing.json")


@pytest.mark.parametrize(
    "uri", ["bucket/key", "http://bucket/key", "s3:///key", "s3://b/../x"]
)
def test_malformed_uris_are_refused(uri):
    with pytest.raises(ObjectStoreError):
        split_uri(uri)
