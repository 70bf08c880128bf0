"""Per-key limits and tenancy in the gateway (in-process, SQLite store): rate limits (both limiter
implementations), the concurrent-job cap, per-key visibility, request size, CORS, secret settings."""

import asyncio
import time

import pytest
import redis
from fastapi.testclient import TestClient

from jobs.queues import EmbeddedJobQueue
from jobs.settings import ServiceSettings, hash_api_key
from jobs.storage import LocalObjectStore
from jobs.stores.sqlite_store import SqliteJobStore
from server.app import build_app
from server.limits import LocalRateLimiter, RedisRateLimiter, retry_after_header

from .conftest import make_card

KEYS = ("sk-alice", "sk-bob")


@pytest.fixture(params=["local", "redis"])
def limiter_factory(request):
    if request.param == "local":
        return LocalRateLimiter
    url = request.getfixturevalue("redis_url")
    return lambda rate, burst: RedisRateLimiter(url, rate, burst, prefix=f"test-{time.monotonic_ns()}:")


def test_a_bucket_allows_its_burst_then_its_rate(limiter_factory):
    async def scenario():
        limiter = limiter_factory(10.0, 3)  # 3 at once, then one per 0.1 s
        assert [await limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await limiter.acquire("a")
        assert 0.05 < wait <= 0.1
        assert await limiter.acquire("b") == 0.0  # buckets are per key
        await asyncio.sleep(wait + 0.01)
        assert await limiter.acquire("a") == 0.0
        assert retry_after_header(wait) == "1"
        await limiter.close()

    asyncio.run(scenario())


def test_concurrent_requests_cannot_both_take_the_last_token(limiter_factory):
    async def scenario():
        limiter = limiter_factory(1.0, 5)
        waits = await asyncio.gather(*(limiter.acquire("a") for _ in range(20)))
        await limiter.close()
        return waits

    assert sum(wait == 0.0 for wait in asyncio.run(scenario())) == 5


def test_a_zero_rate_turns_limits_off(limiter_factory):
    async def scenario():
        limiter = limiter_factory(0.0, 1)
        return [await limiter.acquire("a") for _ in range(100)]

    assert all(wait == 0.0 for wait in asyncio.run(scenario()))


def make_client(tmp_path, **settings) -> TestClient:
    settings = ServiceSettings(api_key_sha256=",".join(hash_api_key(key) for key in KEYS), data_dir=tmp_path,
                               _env_file=None, **settings)
    store = SqliteJobStore(settings.database_path)
    store.register_model(make_card("tiny"), "w1", ttl_seconds=600)
    return TestClient(build_app(settings, store=store, queue=EmbeddedJobQueue(),
                                storage=LocalObjectStore(settings.storage_dir)))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_rate_limit_is_429_with_retry_after(tmp_path):
    with make_client(tmp_path, rate_limit_per_second=1, rate_limit_burst=2) as client:
        assert [client.get("/v1/models", headers=auth("sk-alice")).status_code for _ in range(2)] == [200, 200]
        refused = client.get("/v1/models", headers=auth("sk-alice"))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert client.get("/v1/models", headers=auth("sk-bob")).status_code == 200
        assert client.get("/healthz").status_code == 200  # health and metrics are not /v1: never limited


def test_a_key_sees_and_touches_only_its_own_jobs(tmp_path):
    with make_client(tmp_path) as client:
        job_id = client.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth("sk-alice")).json()["id"]
        for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            response = client.request(method, f"/v1/videos/{job_id}{path}", headers=auth("sk-bob"))
            assert response.status_code == 404 and response.json()["error"]["code"] == "video_not_found"
        assert client.get("/v1/videos", headers=auth("sk-bob")).json()["data"] == []
        assert [v["id"] for v in client.get("/v1/videos", headers=auth("sk-alice")).json()["data"]] == [job_id]
        assert client.get(f"/v1/videos/{job_id}", headers=auth("sk-alice")).json()["status"] == "queued"


def test_concurrent_job_cap_is_429_until_a_job_ends(tmp_path):
    with make_client(tmp_path, max_active_jobs_per_key=2) as client:
        created = [client.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth("sk-alice"))
                   for _ in range(3)]
        assert [r.status_code for r in created] == [200, 200, 429]
        assert created[2].json()["error"]["code"] == "too_many_active_jobs" and created[2].headers["Retry-After"]
        assert client.post("/v1/videos", json={"prompt": "x"}, headers=auth("sk-bob")).status_code == 200
        client.delete(f"/v1/videos/{created[0].json()['id']}", headers=auth("sk-alice"))
        assert client.post("/v1/videos", json={"prompt": "x"}, headers=auth("sk-alice")).status_code == 200


def test_a_body_over_the_limit_is_413(tmp_path):
    with make_client(tmp_path, max_request_bytes=1000) as client:
        response = client.post("/v1/videos", content=b"x" * 1001, headers=auth("sk-alice"))
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
        assert client.post("/v1/videos", json={"prompt": "a red circle"}, headers=auth("sk-alice")).status_code == 200


def test_cors_only_for_configured_origins(tmp_path):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with make_client(tmp_path) as client:
        assert "access-control-allow-origin" not in client.options("/v1/videos", headers=preflight).headers
    with make_client(tmp_path, cors_allow_origins=["https://app.example"]) as client:
        allowed = client.options("/v1/videos", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/v1/videos", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_secret_settings_stay_out_of_their_repr():
    settings = ServiceSettings(s3_secret_access_key="s3-very-secret", webhook_secret="whsec_c2VjcmV0",
                               _env_file=None)
    assert "s3-very-secret" not in repr(settings) and "c2VjcmV0" not in repr(settings)
    assert "s3-very-secret" not in str(settings)


def test_a_malformed_form_body_is_400_invalid_multipart(tmp_path):
    with make_client(tmp_path) as client:
        response = client.post("/v1/videos", content=b"--x\r\nnot a part\r\n",
                               headers={**auth("sk-alice"), "Content-Type": "multipart/form-data; boundary=x"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_multipart"


@pytest.mark.parametrize("failure, status, code", [
    (redis.exceptions.ConnectionError("Connection refused"), 503, "service_unavailable"),
    (RuntimeError("a bug"), 500, "internal_error"),
])
def test_unexpected_failures_keep_the_error_shape(tmp_path, failure, status, code):
    settings = ServiceSettings(data_dir=tmp_path, _env_file=None)

    class FailingStore(SqliteJobStore):
        def get(self, job_id):
            raise failure

    app = build_app(settings, store=FailingStore(settings.database_path), queue=EmbeddedJobQueue(),
                    storage=LocalObjectStore(settings.storage_dir))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/videos/video_0123456789abcdef")
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert "a bug" not in response.text and "refused" not in response.text  # details stay in the server log




def test_open_mode_limits_each_client_and_caps_its_active_jobs(tmp_path):
    """No keys configured: every caller sees every job, but requests and active jobs are limited per
    client address (a fuzzer or a script in a loop cannot queue without bound)."""
    settings = ServiceSettings(data_dir=tmp_path, rate_limit_per_second=1, rate_limit_burst=6,
                               max_active_jobs_per_key=2, _env_file=None)
    store = SqliteJobStore(settings.database_path)
    store.register_model(make_card("tiny"), "w1", ttl_seconds=600)
    app = build_app(settings, store=store, queue=EmbeddedJobQueue(), storage=LocalObjectStore(settings.storage_dir))
    body = {"prompt": "a red circle", "size": "32x32"}
    with TestClient(app, client=("10.0.0.1", 5000)) as first, TestClient(app, client=("10.0.0.2", 5000)) as second:
        assert [first.post("/v1/videos", json=body).status_code for _ in range(3)] == [200, 200, 429]
        capped = first.post("/v1/videos", json=body)
        assert capped.status_code == 429 and capped.json()["error"]["code"] == "too_many_active_jobs"
        assert second.post("/v1/videos", json=body).status_code == 200  # another client: its own cap
        assert len(second.get("/v1/videos").json()["data"]) == 3  # one tenant: everyone sees every job
        limited = [first.get("/v1/models").status_code for _ in range(3)]
        assert limited[-1] == 429 and first.get("/v1/models").json()["error"]["code"] == "rate_limit_exceeded"
        assert second.get("/v1/models").status_code == 200  # its own bucket
