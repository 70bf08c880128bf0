"""``ObjectStore``: where inputs and output MP4s live. S3 (any S3 endpoint: AWS, MinIO, moto) or a
local directory (the one-process default). Import-light (boto3 is imported only by the S3 store) so
the gateway can presign and stream without the worker's dependencies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol


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

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
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
        target = self._path(prefix.rstrip("/"))
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
                 public_endpoint_url: str | None = None, create_bucket: bool = False):
        import boto3
        from botocore.config import Config

        config = Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"},
                        s3={"addressing_style": "path"})
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
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def local_path(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, expires_seconds: int) -> str | None:
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_seconds)

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)
