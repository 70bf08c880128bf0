"""Service settings, read once from ``HSA_*`` environment variables (or a ``.env`` file).

One settings class for the gateway and the workers, so a compose file sets each value once.
``HSA_ENVIRONMENT=production`` refuses unsafe values (no API keys) at start-up.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def hash_api_key(key: str) -> str:
    """What ``HSA_API_KEY_SHA256`` holds for a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class ServiceSettings(BaseSettings):
    # protected_namespaces: ``model`` and ``model_path`` are the served model's, not pydantic's
    # env_ignore_empty: an empty variable (compose's ${VAR:-}) means "the default", not an empty value
    model_config = SettingsConfigDict(env_prefix="HSA_", env_file=".env", extra="ignore", protected_namespaces=(),
                                      env_ignore_empty=True)

    environment: Literal["development", "production"] = "development"

    # job store + queue: Redis and Celery when set, else the embedded SQLite store and worker
    redis_url: str | None = None
    data_dir: Path = Path("hsa-data")  # SQLite job store and local objects of the embedded default

    # object storage
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = "hsa-videos"
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None  # host clients use for presigned URLs, if it differs
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = Field(None, repr=False)  # repr=False: never in a logged settings dump
    s3_create_bucket: bool = True
    presign_seconds: int = Field(3600, gt=0)
    # a worker's upload retries: backoff × 2ⁿ between attempts (0.5 s, 1 s, 2 s, 4 s, 8 s ≈ 15 s of outage
    # ridden out); after the last one the job fails as storage_unavailable and its MP4 stays in spool_dir
    upload_attempts: int = Field(6, ge=1)
    upload_backoff_seconds: float = Field(0.5, ge=0)

    # API
    api_key_sha256: str = ""  # comma-separated SHA-256 hex digests of the accepted bearer keys
    # requests without a model get this one; unset, the only model served (a 404 lists them when several are)
    default_model: str | None = None
    poll_after_ms: int = Field(500, ge=50)  # hint for the openai SDK's poll helper
    output_ttl_seconds: int = Field(7 * 24 * 3600, gt=0)  # reported as expires_at
    idempotency_ttl_seconds: int = Field(24 * 3600, gt=0)
    max_request_bytes: int = Field(25 * 1024 * 1024, gt=0)  # 413 above: a 20 MiB image plus form overhead
    # per API key (only when keys are configured): a token bucket over every /v1 request, and a cap
    # on the key's queued + running jobs; 0 turns either off
    rate_limit_per_second: float = Field(20.0, ge=0)
    rate_limit_burst: int = Field(40, ge=1)
    max_active_jobs_per_key: int = Field(32, ge=0)
    # the browser playground at / (static files; it uses the public API with the caller's key)
    playground: bool = True
    # browser origins allowed by CORS; empty (the default) installs no CORS middleware at all
    cors_allow_origins: list[str] = Field(default_factory=list)

    # webhooks (Standard Webhooks signatures, verifiable with openai's client.webhooks.unwrap)
    webhook_secret: str | None = Field(None, repr=False)
    webhook_max_attempts: int = Field(5, ge=1)
    webhook_backoff_seconds: float = Field(1.0, ge=0)
    # networks webhooks may reach besides public addresses (comma-separated CIDRs, e.g. 10.0.0.0/8):
    # by default none, so no caller can make a worker POST to the services beside it
    webhook_allowed_networks: str = ""

    # workers
    worker_heartbeat_seconds: float = Field(10.0, gt=0)
    # quality: this fraction of below-full-budget jobs is re-run at budget 1.0 on the lowest queue
    # priority and scored against the served video (worker/shadow.py); 0 turns it off
    shadow_sample_rate: float = Field(0.0, ge=0, le=1)
    time_limit_factor: float = Field(10.0, ge=1)  # soft limit = factor × expected seconds + 60 s
    # lossless RGB H.264 (exact frames, several times larger, not played by browsers) instead of yuv420p
    video_lossless: bool = False
    # the gateway's /metrics on a port of its own (for a Prometheus inside the network) instead of the
    # API's port; unset: on the API's port, beside the routes
    metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_port: int = Field(9101, ge=0, le=65535)  # a Celery worker's /metrics; 0 turns it off
    tiny_weights: Path | None = None  # built-in tiny model weights (default: the packaged ones)
    torch_threads: int | None = None

    # the model a worker serves (``hsa-video worker`` and the embedded worker of ``hsa-video serve``;
    # each has a command-line flag of the same name): the built-in tiny model or a registered checkpoint
    model: str = "tiny"
    model_path: Path | None = None  # the model's diffusers-format directory (for tiny: a weights directory)
    # what the worker accepts, as "WIDTHxHEIGHT" and frame counts, comma-separated in the environment
    # (HSA_SIZES=832x480,480x832); empty: the model's preset
    sizes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    num_frames: Annotated[list[int], NoDecode] = Field(default_factory=list)
    device: str | None = None  # torch device; default cuda when there is one, else cpu
    dtype: Literal["bfloat16", "float16", "float32"] | None = None  # default bf16 on GPUs, fp32 on CPU
    # where the text encoder (UMT5, Gemma 3) lives: on the device, on the CPU (encodes there), or on
    # the CPU between encodes (moved to the device for each)
    text_encoder: Literal["device", "cpu", "offload"] = "device"
    # the idle expert of a two-expert model (Wan 2.2 A14B) waits on the CPU while the other runs
    expert_offload: bool = True
    kv_cache_dtype: Literal["bfloat16", "float16", "float32", "float8_e4m3fn"] | None = None  # default: the model's
    kv_cache_location: Literal["device", "host"] = "device"  # host: HSA's K/V cache in CPU memory
    # forecast skipped tokens' K/V in the first k layers (HSAConfig.kv_forecast_layers); each costs one more
    # layer of K/V cache, a number above the model's layers forecasts them all
    kv_forecast_layers: int = Field(0, ge=0)
    # device memory the worker may use, its model included (e.g. two workers sharing a GPU); HSA's K/V
    # cache is planned within it. Default: whatever the device has free.
    memory_limit_gib: float | None = Field(None, gt=0)

    @field_validator("sizes", "num_frames", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sizes")
    @classmethod
    def _size_format(cls, value: list[str]) -> list[str]:
        sizes = []
        for size in value:
            width, _, height = size.lower().partition("x")
            if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
                raise ValueError(f"sizes: {size!r} is not WIDTHxHEIGHT (e.g. 832x480)")
            sizes.append(f"{int(width)}x{int(height)}")
        return sizes

    @field_validator("num_frames")
    @classmethod
    def _positive_frames(cls, value: list[int]) -> list[int]:
        if any(frames < 1 for frames in value):
            raise ValueError(f"num_frames must be positive, got {value}")
        return value

    @cached_property  # read by every request
    def api_key_hashes(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.api_key_sha256.split(",") if h.strip())

    @property
    def database_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus multiprocess files of this host's processes (wiped at start)."""
        return self.data_dir / "prometheus"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def spool_dir(self) -> Path:
        """Outputs a worker could not upload, kept for a retry (S3 storage only)."""
        return self.data_dir / "spool"

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from .destinations import parse_networks

        parse_networks(value)  # a typo fails at start, not at the first webhook
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "ServiceSettings":
        for digest in self.api_key_hashes:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("HSA_API_KEY_SHA256 must hold SHA-256 hex digests "
                                 "(`hsa-video hash-key KEY` prints one), not the keys themselves")
        if self.environment == "production" and not self.api_key_hashes:
            raise ValueError("HSA_ENVIRONMENT=production needs HSA_API_KEY_SHA256 (no open API in production)")
        return self


def open_object_store(settings: ServiceSettings):
    from .storage import LocalObjectStore, S3ObjectStore

    if settings.storage == "s3":
        return S3ObjectStore(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_region,
                             settings.s3_access_key_id, settings.s3_secret_access_key,
                             settings.s3_public_endpoint_url, create_bucket=settings.s3_create_bucket,
                             upload_attempts=settings.upload_attempts,
                             upload_backoff_seconds=settings.upload_backoff_seconds, spool_dir=settings.spool_dir)
    return LocalObjectStore(settings.storage_dir)


def open_job_store_for(settings: ServiceSettings):
    from .stores import open_job_store

    return open_job_store(settings.redis_url, str(settings.database_path), settings.idempotency_ttl_seconds)
