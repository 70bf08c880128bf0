"""Object stores: a local directory, and S3 against a real S3 HTTP endpoint (moto server)."""

import httpx
import pytest

from jobs.storage import LocalObjectStore, S3ObjectStore


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


UNSAFE_KEYS = ["../outside", "videos/../../outside", "/etc/passwd", "videos//x", "videos/./x", "videos\\..\\x",
               "videos/x\x00.mp4", "", "."]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_local_store_refuses_keys_that_could_leave_its_root(tmp_path, key):
    store = LocalObjectStore(tmp_path / "root")
    for use in (lambda: store.put_bytes(key, b"x", "text/plain"), lambda: store.get_bytes(key),
                lambda: store.local_path(key), lambda: store.delete_prefix(key)):
        with pytest.raises(ValueError, match="unsafe object key"):
            use()
    assert not (tmp_path / "outside").exists()


def test_local_store_refuses_a_symlink_out_of_its_root(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    (tmp_path / "root" / "videos").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("videos/planted", b"x", "text/plain")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_s3_store_refuses_unsafe_keys_and_prefixes(s3_endpoint, key):
    store = S3ObjectStore("key-checks", s3_endpoint, access_key_id="test", secret_access_key="test",
                          create_bucket=True)
    store.put_bytes("videos/a/video.mp4", b"kept", "video/mp4")
    for use in (lambda: store.put_bytes(key, b"x", "text/plain"), lambda: store.get_bytes(key),
                lambda: store.presigned_url(key, 60), lambda: store.delete_prefix(key)):
        with pytest.raises(ValueError, match="unsafe object key"):
            use()
    assert store.get_bytes("videos/a/video.mp4") == b"kept"  # an empty prefix did not empty the bucket


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
