"""Below the S3 API: every version of an erased key removed (against moto's versioned S3), and
the embedded store's volume files searched for an object's bytes. The real SeaweedFS vacuum
and search run in tests/integration/test_erasure.py and test_faults.py."""

from __future__ import annotations

import socket
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from lineage.erasure.disk import WINDOW, DiskError, EmbeddedStore, purge_versions, windows


def test_every_version_and_delete_marker_of_the_key_is_removed() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="dvc")
        s3.put_bucket_versioning(Bucket="dvc", VersioningConfiguration={"Status": "Enabled"})
        key, neighbour = "files/md5/ab/cdef", "files/md5/ab/cdef0"  # a prefix of another key
        for body in (b"v1", b"v2"):
            s3.put_object(Bucket="dvc", Key=key, Body=body)
        s3.put_object(Bucket="dvc", Key=neighbour, Body=b"someone else")
        s3.delete_object(Bucket="dvc", Key=key)  # what the API delete leaves: a marker
        assert purge_versions(s3, "dvc", key) == 3  # two versions and the marker
        listed = s3.list_object_versions(Bucket="dvc", Prefix=key)
        left = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        assert [v["Key"] for v in left] == [neighbour]  # the other key is untouched


def test_an_unversioned_bucket_has_nothing_to_purge() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="dvc")
        s3.put_object(Bucket="dvc", Key="k", Body=b"x")
        s3.delete_object(Bucket="dvc", Key="k")
        assert purge_versions(s3, "dvc", "k") == 0


def test_samples_are_the_whole_object_or_three_windows() -> None:
    assert windows(b"short") == [b"short"]
    data = bytes(range(256)) * 40
    start, middle, end = windows(data)
    assert len(start) == len(middle) == len(end) == WINDOW
    assert data.startswith(start) and data.endswith(end) and middle in data


def test_the_search_reads_only_the_buckets_volumes_and_finds_any_window(tmp_path: Path) -> None:
    record = bytes(range(256)) * 20
    (tmp_path / "dvc_1.dat").write_bytes(b"header" + record[WINDOW:] + b"trailer")
    (tmp_path / "other_1.dat").write_bytes(record)  # another bucket's volume: not ours to say
    (tmp_path / "dvc_2.dat").write_bytes(b"")
    store = EmbeddedStore(tmp_path, "http://127.0.0.1:9")
    found = store.holding("dvc", {"md5-a": windows(record), "md5-b": [b"nowhere" * 10]})
    assert found == {"md5-a": ["dvc_1.dat"], "md5-b": []}


def test_a_master_that_does_not_answer_fails_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    store = EmbeddedStore(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(DiskError) as failed:
        store.vacuum_until_gone("dvc", {})
    assert "did not compact the volumes" in failed.value.message
    assert failed.value.hint is not None and "lineage erase` again" in failed.value.hint
