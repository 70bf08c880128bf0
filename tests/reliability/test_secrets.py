"""Secrets never reach a log or an answer: the stack runs with a password in every URL it is given
(Redis for the job store and the Celery broker, a webhook receiver's user-info), uses every secret
(API keys right and wrong, the S3 secret key, the webhook secret), and every process's log is read."""

import base64

import httpx
import pytest

from hsa_video.harness.stack import API_KEY, S3_SECRET, WEBHOOK_SECRET, started_stack
from jobs.records import JobStatus
from tests.services import WebhookReceiver

REDIS_PASSWORD = "redis-password-never-logged"
WEBHOOK_PASSWORD = "webhook-password-never-logged"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    with started_stack(tmp_path_factory.mktemp("secrets"), s3_endpoint, workers=1,
                       redis_password=REDIS_PASSWORD) as stack:
        yield stack


def test_secrets_never_reach_a_log(stack):
    assert REDIS_PASSWORD in stack.redis_url
    receiver = WebhookReceiver()
    try:
        with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=30) as tenant:
            hook = receiver.url.replace("http://", f"http://hooks:{WEBHOOK_PASSWORD}@")
            job_id = tenant.post("/v1/videos", json={"prompt": "a red circle", "size": "32x32", "steps": 4,
                                                     "webhook_url": hook}).json()["id"]
            assert receiver.arrived.wait(60), stack.logs()
            completed = stack.wait_terminal(job_id)
            assert completed.status == JobStatus.completed
            video = tenant.get(f"/v1/videos/{job_id}")
            assert tenant.get(f"/v1/videos/{job_id}/content").status_code == 307
        # the receiver's user-info became Basic credentials, as a browser or httpx would send them
        headers = {k.lower(): v for k, v in receiver.requests[0][0].items()}
        assert headers["authorization"] == "Basic " + base64.b64encode(f"hooks:{WEBHOOK_PASSWORD}".encode()).decode()
        for wrong in (API_KEY + "x", S3_SECRET, WEBHOOK_SECRET, REDIS_PASSWORD):
            assert httpx.get(stack.base_url + "/v1/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        answers = [video.text, httpx.get(stack.base_url + "/readyz").text]
    finally:
        receiver.close()
    stack.gateway.stop()  # flushed and closed: every line it wrote is on disk
    for worker in stack.workers:
        worker.stop()
    logs = [process.log_path.read_text(errors="replace") for process in [stack.gateway, *stack.workers]]
    logs += [path.read_text(errors="replace") for path in stack.redis_dir.glob("*.log")]
    assert sum(len(text) for text in logs) > 5000  # the processes did log
    assert "gateway mode: jobs go through redis://***@127.0.0.1" in logs[0]
    for secret in (API_KEY, S3_SECRET, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), REDIS_PASSWORD,
                   WEBHOOK_PASSWORD):
        assert not any(secret in text for text in logs + answers), secret
