"""Object stores: a local directory, and S3 against a real S3 HTTP endpoint (moto server)."""

import httpx
import pytest

from server.storage import LocalObjectStore, S3ObjectStore


def test_local_store_roundtrip_and_prefix_delete(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("videos/a/input.png", b"png", "image/png")
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"mp4")
    store.put_file("videos/a/video.mp4", source, "video/mp4")
    store.put_file("videos/a/video.mp4", source, "video/mp4")  # a re-run overwrites
    assert store.get_bytes("videos/a/input.png") == b"png"
    assert store.local_path("videos/a/video.mp4").read_bytes() == b"mp4"
    assert store.presigned_url("videos/a/video.mp4", 60) is None
    store.delete_prefix("videos/a/")
    assert store.local_path("videos/a/video.mp4") is None
    store.ping()


def test_local_store_refuses_keys_outside_its_root(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        LocalObjectStore(tmp_path / "root").put_bytes("../outside", b"x", "text/plain")


def test_s3_store_against_a_real_endpoint(s3_endpoint, tmp_path):
    store = S3ObjectStore("test-bucket", s3_endpoint, access_key_id="test", secret_access_key="test",
                          create_bucket=True)
    store.ping()
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00mp4 bytes")
    store.put_file("videos/b/video.mp4", source, "video/mp4")
    store.put_bytes("videos/b/input.png", b"png", "image/png")
    assert store.get_bytes("videos/b/input.png") == b"png"
    url = store.presigned_url("videos/b/video.mp4", 60)
    response = httpx.get(url)  # no credentials: the signature in the URL is the authorisation
    assert response.status_code == 200 and response.content == b"\x00mp4 bytes"
    assert response.headers["content-type"] == "video/mp4"
    store.delete_prefix("videos/b/")
    assert httpx.get(url).status_code == 404
