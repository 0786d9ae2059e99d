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


@pytest.mark.parametrize(
    "uri",
    [
        "s3://../outside/x",  # the bucket '..' would name the folder above the store
        "s3://./x",
        "s3://Bucket/x",  # S3's rules: lowercase
        "s3://ab/x",  # too short
        "s3://a..b/x",
        "s3://192.168.1.1/x",
        "s3://xn--bucket/x",
        "s3://my-bucket-s3alias/x",
        "s3://bucket:9000/x",
        "s3://[::1/x",  # urlparse would raise ValueError on this one
        "s3://bucket/a/./b",
        "s3://bucket/" + "k" * 1025,
        "s3://bucket/a\x00b",
        None,
        b"s3://bucket/x",
    ],
)
def test_every_bad_uri_is_the_stores_own_error(uri, tmp_path):
    with pytest.raises(ObjectStoreError):
        split_uri(uri)
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(ObjectStoreError):
        store.write_bytes(uri, b"x")
    assert not (tmp_path / "outside").exists()
    assert not any((tmp_path / "store").rglob("x"))


def test_keys_are_taken_whole_as_s3_takes_them(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    store.write_bytes("s3://bucket/a/report?v=1#top.json", b"kept")
    assert split_uri("s3://bucket/a/report?v=1#top.json") == (
        "bucket",
        "a/report?v=1#top.json",
    )
    assert store.list("s3://bucket/a/") == ["s3://bucket/a/report?v=1#top.json"]
    # what a folder cannot hold is refused by name, not with an OSError
    for uri in ("s3://bucket/a//b", "s3://bucket/" + "n" * 256):
        with pytest.raises(ObjectStoreError, match="local store"):
            store.write_bytes(uri, b"x")
