"""Tenants kept apart on a real gateway (uvicorn, Redis store, Celery queue, S3): per-key job
visibility, rate limits and concurrent-job caps; presigned URLs that expire; CORS off unless
configured."""

import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from hsa_video.harness.stack import API_KEY, S3_SECRET, started_stack
from jobs.records import JobRecord, JobSpec, JobStatus, new_job_id, output_key
from jobs.settings import hash_api_key

OTHER_KEY = "sk-reliability-other-tenant"
THIRD_KEY = "sk-reliability-third-tenant"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    keys = ",".join(hash_api_key(key) for key in (API_KEY, OTHER_KEY, THIRD_KEY))
    with started_stack(tmp_path_factory.mktemp("tenancy"), s3_endpoint, stand_in=True, api_key_sha256=keys,
                       rate_limit_per_second="5", rate_limit_burst="10", max_active_jobs_per_key="2",
                       presign_seconds="1") as stack:
        yield stack


def client(stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_key_sees_only_its_own_jobs(stack):
    with client(stack, API_KEY) as owner, client(stack, OTHER_KEY) as other:
        job_id = owner.post("/v1/videos", json={"prompt": "a red circle", "size": "32x32"}).json()["id"]
        assert owner.get(f"/v1/videos/{job_id}").status_code == 200
        for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            response = other.request(method, f"/v1/videos/{job_id}{path}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "video_not_found"
        assert job_id not in [video["id"] for video in other.get("/v1/videos").json()["data"]]
        assert job_id in [video["id"] for video in owner.get("/v1/videos").json()["data"]]
        assert stack.record(job_id).status == JobStatus.queued  # the other key's DELETE cancelled nothing
        owner.delete(f"/v1/videos/{job_id}")


def test_rate_limit_is_per_key_with_retry_after(stack):
    time.sleep(2)  # a full bucket for every key
    with client(stack, OTHER_KEY) as hasty, client(stack, API_KEY) as calm:
        statuses = [hasty.get("/v1/models") for _ in range(16)]
        refused = [response for response in statuses if response.status_code == 429]
        assert 4 <= len(refused) <= 6, [r.status_code for r in statuses]  # burst 10, +5/s while sending
        error = refused[0].json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
        wait = int(refused[0].headers["Retry-After"])
        assert 1 <= wait <= 2
        assert calm.get("/v1/models").status_code == 200  # another key's bucket is untouched
        time.sleep(wait)
        assert hasty.get("/v1/models").status_code == 200


def test_concurrent_job_cap_per_key(stack):
    time.sleep(2)
    with client(stack, THIRD_KEY) as tenant:
        responses: list[httpx.Response] = []

        def create():
            responses.append(tenant.post("/v1/videos", json={"prompt": "a red circle", "size": "32x32"}))

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = [r.json()["id"] for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert 1 <= len(accepted) <= 2 and len(accepted) + len(refused) == 6  # never over the cap
        assert refused[0].json()["error"]["code"] == "too_many_active_jobs" and refused[0].headers["Retry-After"]
        for job_id in accepted:  # a cancelled job frees its slot
            tenant.delete(f"/v1/videos/{job_id}")
        assert tenant.post("/v1/videos", json={"prompt": "a red circle", "size": "32x32"}).status_code == 200


def test_api_keys_exist_only_as_digests(stack):
    values = [stack.store.redis.dump(key) or b"" for key in stack.store.redis.scan_iter("*")]
    assert values and not any(API_KEY.encode() in value for value in values)  # jobs name their owner by digest


def test_presigned_urls_carry_a_signed_expiry(stack):
    """Download URLs are SigV4-presigned for ``HSA_PRESIGN_SECONDS`` (1 s here). S3 and MinIO refuse
    them after that; moto does not check expiry, so the test checks the signed lifetime itself."""
    spec = JobSpec(job_id=new_job_id(), model="tiny", prompt="a red circle", width=32, height=32, num_frames=16,
                   fps=8, steps=1, budget=1.0, seed=0)
    stack.store.create(JobRecord(spec=spec, owner=hash_api_key(API_KEY)))
    record = stack.store.start(spec.job_id)
    stack.put_object(output_key(spec.job_id), b"\x00mp4")
    record.status, record.output_key, record.progress = JobStatus.completed, output_key(spec.job_id), 100.0
    record.completed_at = time.time()
    record.expires_at = record.completed_at + 3600
    assert stack.store.finish(record)

    redirect = stack.http.get(f"/v1/videos/{spec.job_id}/content")
    assert redirect.status_code == 307
    query = parse_qs(urlparse(redirect.headers["location"]).query)
    assert query["X-Amz-Expires"] == ["1"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert abs(signed_at.timestamp() - time.time()) < 5
    assert S3_SECRET not in redirect.headers["location"]  # only the signature, never the secret key
    assert httpx.get(redirect.headers["location"]).content == b"\x00mp4"


def test_cors_is_off_by_default(stack):
    preflight = httpx.options(stack.base_url + "/v1/videos", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    simple = stack.http.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
