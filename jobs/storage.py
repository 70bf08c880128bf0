"""``ObjectStore``: where inputs and output MP4s live. S3 (any S3 endpoint: AWS, MinIO, moto) or a
local directory (the one-process default). Import-light (boto3 is imported only by the S3 store) so
the gateway can presign and stream without the worker's dependencies.

Keys are checked before any use (``check_key``): relative, ``/``-separated, no ``.``/``..`` or empty
segments, no backslashes or control characters, so no key can leave the store's root or prefix.
S3 uploads ride out an outage: they are retried with exponential backoff, and when the endpoint stays
down the file is kept in a local spool directory and the upload fails with ``StorageUnavailable``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger("hsa.storage")


class StorageUnavailable(Exception):
    """An upload failed after every retry; the job fails with this code and its file is kept."""

    code = "storage_unavailable"


def check_key(key: str, prefix: bool = False) -> str:
    """``key`` if it is a safe object key (with ``prefix``, a non-empty key prefix that may end in
    ``/``), else ``ValueError``."""
    segments = key[:-1].split("/") if prefix and key.endswith("/") else key.split("/")
    if (not key or key.startswith("/") or "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key)
            or any(segment in ("", ".", "..") for segment in segments)):
        raise ValueError(f"unsafe object key: {key!r}")
    return key


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def put_file(self, key: str, path: Path, content_type: str) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A file to stream directly, for stores that have one (local), else None."""

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        """A time-limited download URL, for stores that serve their own objects (S3), else None."""

    def delete_prefix(self, prefix: str) -> None: ...

    def ping(self) -> None: ...


class LocalObjectStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, prefix: bool = False) -> Path:
        path = (self.root / check_key(key, prefix)).resolve()  # resolve(): a symlink cannot lead out either
        if self.root not in path.parents:
            raise ValueError(f"object key escapes the storage root: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file, a re-run overwrites atomically
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".partial")
        shutil.copyfile(path, temporary)
        os.replace(temporary, target)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        return None

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix, prefix=True)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage directory {self.root} is not writable")


class S3ObjectStore:
    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 public_endpoint_url: str | None = None, create_bucket: bool = False,
                 upload_attempts: int = 6, upload_backoff_seconds: float = 0.5, spool_dir: Path | None = None):
        import boto3
        from botocore.config import Config

        # botocore's own retries stay short (throttling, a dropped connection); outages longer than
        # a second are the upload loop's, whose schedule is a setting
        config = Config(signature_version="s3v4", retries={"total_max_attempts": 2, "mode": "standard"},
                        connect_timeout=5, read_timeout=30, s3={"addressing_style": "path"})
        self.upload_attempts, self.upload_backoff_seconds = upload_attempts, upload_backoff_seconds
        self.spool_dir = spool_dir
        credentials = dict(region_name=region or "us-east-1", aws_access_key_id=access_key_id,
                           aws_secret_access_key=secret_access_key, config=config)
        self.bucket = bucket
        self.client = boto3.client("s3", endpoint_url=endpoint_url, **credentials)
        # presigned URLs must name a host the *client* can reach (e.g. localhost:9000, not minio:9000)
        self.presign_client = (boto3.client("s3", endpoint_url=public_endpoint_url, **credentials)
                               if public_endpoint_url else self.client)
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Upload with retries; after the last one, keep the file in the spool directory (under its
        key) and raise ``StorageUnavailable`` saying where it is."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        check_key(key)
        started = time.monotonic()
        for attempt in range(1, self.upload_attempts + 1):
            try:
                self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})
                if attempt > 1:
                    log.info("uploaded %s at attempt %d after %.1f s", key, attempt, time.monotonic() - started)
                return
            except (BotoCoreError, ClientError, S3UploadFailedError) as error:
                last_error = error
                if attempt < self.upload_attempts:
                    delay = self.upload_backoff_seconds * 2 ** (attempt - 1)
                    log.warning("upload of %s failed (attempt %d/%d, retrying in %.1f s): %s", key, attempt,
                                self.upload_attempts, delay, error)
                    time.sleep(delay)
        kept = ""
        if self.spool_dir is not None:
            spooled = LocalObjectStore(self.spool_dir)
            spooled.put_file(key, path, content_type)
            kept = f"; the file is kept at {spooled.local_path(key)} for a retry"
        raise StorageUnavailable(f"could not upload {key} in {self.upload_attempts} attempts over "
                                 f"{time.monotonic() - started:.1f} s ({type(last_error).__name__}: {last_error})"
                                 f"{kept}")

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires_seconds)

    def delete_prefix(self, prefix: str) -> None:
        check_key(prefix, prefix=True)  # an empty prefix would empty the bucket
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)
