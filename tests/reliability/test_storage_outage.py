"""The S3 endpoint down: uploads retry with backoff and succeed when it returns; an endpoint that
stays down fails the job as ``storage_unavailable`` and keeps its MP4 on the worker for a retry.

S3 (moto) sits behind a TCP proxy that resets every connection while "down". The worker retries
an upload 5 times, 0.25 s × 2ⁿ apart: an outage of up to ~3.75 s is ridden out.
"""

import time
from pathlib import Path

import pytest

from hsa_video.harness.stack import started_stack
from jobs.records import JobStatus, output_key

from .checks import assert_consistent_completion


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    with started_stack(tmp_path_factory.mktemp("storage-outage"), s3_endpoint, workers=1, upload_attempts="5",
                       upload_backoff_seconds="0.25") as stack:
        yield stack


def test_an_upload_retries_through_a_short_outage(stack):
    job_id = stack.submit()
    stack.wait_until_computing(job_id)
    stack.s3_proxy.down()
    time.sleep(2.5)  # the job finishes sampling (~1.5 s) and meets a dead endpoint
    stack.s3_proxy.up()
    record = stack.wait_terminal(job_id)
    assert_consistent_completion(stack, record, attempts=1)
    assert record.timings["upload"] > 0.2  # it waited for the endpoint
    assert "uploaded videos/" in stack.workers[0].log_path.read_text()  # … at a later attempt


def test_an_endpoint_that_stays_down_fails_the_job_and_keeps_the_video(stack):
    job_id = stack.submit()
    stack.wait_until_computing(job_id)
    stack.s3_proxy.down()
    try:
        record = stack.wait_terminal(job_id)
    finally:
        stack.s3_proxy.up()
    assert record.status == JobStatus.failed and record.error.code == "storage_unavailable", record
    kept = Path(stack.folder / "data-0" / "spool" / output_key(job_id))
    assert f"kept at {kept}" in record.error.message
    assert kept.stat().st_size > 1000  # the encoded MP4, ready to upload again
    assert stack.objects(f"videos/{job_id}/") == {}
    # the worker carries on once the endpoint is back
    follow_up = stack.wait_terminal(stack.submit())
    assert_consistent_completion(stack, follow_up, attempts=1)
