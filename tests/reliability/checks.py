"""Assertions the reliability tests share (the stack itself is ``hsa_video.harness``)."""

from hsa_video.harness.stack import Stack
from jobs.records import JobRecord, JobStatus


def assert_consistent_completion(stack: Stack, record: JobRecord, attempts: int) -> None:
    """Completed once, with exactly its one MP4 in storage, and a record that says so."""
    assert record.status == JobStatus.completed, (record, stack.logs())
    assert record.error is None and record.progress == 100 and record.attempts == attempts, record
    assert record.completed_at >= record.started_at >= record.created_at
    objects = stack.objects(f"videos/{record.id}/")
    assert objects == {record.output_key: record.output_bytes}, objects
    assert stack.completions(record.id) == 1
