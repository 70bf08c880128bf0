"""A job past its hard time limit is failed cleanly (``timeout``) and its worker recovers.

The worker's model hangs inside a step for "hang" prompts (``hanging_worker.py``) and ignores the
soft limit, as a stuck native kernel would. At the hard limit Celery kills the pool process; the
worker's main process fails the job in the store, and a fresh pool process serves the next job.
"""

import sys
import time

import pytest

from hsa_video.harness.stack import started_stack
from jobs.queues import TASK_NAME, queue_name, task_message
from jobs.records import JobRecord, JobSpec, JobStatus, new_job_id
from jobs.sla import JobPlan
from tests.services import wait_until

from .checks import assert_consistent_completion

SOFT_LIMIT, HARD_LIMIT = 1.0, 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint):
    hanging = [sys.executable, "-m", "tests.reliability.hanging_worker", "--model", "tiny"]
    with started_stack(tmp_path_factory.mktemp("time-limit"), s3_endpoint, workers=1, worker_command=hanging) as stack:
        yield stack


def submit_with_limits(stack, prompt: str) -> str:
    """Stored and queued as the gateway does, with limits of seconds (the gateway's are minutes)."""
    spec = JobSpec(job_id=new_job_id(), model="tiny", prompt=prompt, width=32, height=32, num_frames=16, fps=8,
                   steps=30, budget=1.0, seed=0)
    record = JobRecord(spec=spec, plan=JobPlan(budget=1.0, soft_time_limit=SOFT_LIMIT))
    stack.store.create(record)
    stack.celery.send_task(TASK_NAME, args=[task_message(record)], queue=queue_name(spec.model),
                           soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
    return spec.job_id


def test_a_job_past_its_hard_time_limit_fails_and_the_worker_recovers(stack):
    job_id = submit_with_limits(stack, "hang on a red circle")
    started = time.monotonic()
    failed: JobRecord = stack.wait_terminal(job_id, timeout=120)
    assert failed.status == JobStatus.failed, failed
    assert failed.error.code == "timeout" and "hard time limit" in failed.error.message
    assert stack.workers[0].alive()
    # the worker logs the failure just after it stores it: give the line a moment to land
    log = wait_until(lambda: "failed: hard time limit" in (text := stack.workers[0].log_path.read_text()) and text,
                     10, "the worker's failure log line")
    assert "Hard time limit" in log and "hard time limit" in log

    follow_up = stack.wait_terminal(stack.submit(), timeout=120)
    assert_consistent_completion(stack, follow_up, attempts=1)
    assert time.monotonic() - started < 90
