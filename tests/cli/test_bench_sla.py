"""``hsa-video bench sla``: arrivals, statistics, the row definitions, and one toy run on the real stack."""

import json
import statistics

import pytest

from hsa_video.benchmarks.sla import Submission, percentile, poisson_arrivals, summarise
from jobs.records import JobRecord, JobSpec, JobStatus
from jobs.sla import JobPlan
from tests.services import require_binary

from .test_cli import hsa_video


def test_poisson_arrivals_have_the_rate_and_are_reproducible():
    arrivals = poisson_arrivals(2.0, 2000.0, seed=7)
    assert arrivals == poisson_arrivals(2.0, 2000.0, seed=7) and arrivals != poisson_arrivals(2.0, 2000.0, seed=8)
    assert len(arrivals) / 2000.0 == pytest.approx(2.0, rel=0.05)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert statistics.fmean(gaps) == pytest.approx(0.5, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(0.5, rel=0.1)  # exponential: std = mean
    assert all(0 <= t < 2000.0 for t in arrivals) and arrivals == sorted(arrivals)


def test_percentile_interpolates_linearly():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95)


def _record(job_id, created, completed, deadline, predicted, budget, status=JobStatus.completed):
    spec = JobSpec(job_id=job_id, model="tiny", prompt="p", width=32, height=32, num_frames=16, fps=8, steps=40,
                   budget=budget, seed=0, deadline_at=deadline)
    return JobRecord(spec=spec, status=status, created_at=created, completed_at=completed,
                     plan=JobPlan(budget=budget, predicted_completion_at=predicted),
                     stats={"budget": budget, "achieved_compute_fraction": budget, "budget_at_submission": 1.0})


def test_rows_count_rejections_as_misses_and_measure_prediction_error():
    records = [
        _record("a", 100.0, 104.0, 110.0, 105.0, 1.0),  # met; predicted 5 s for 4 s: error 25%
        _record("b", 100.0, 112.0, 110.0, 112.0, 0.5),  # late; predicted exactly
        _record("c", 100.0, 101.0, 110.0, None, 0.5, status=JobStatus.failed),
    ]
    submissions = [Submission(0, 200, "a"), Submission(1, 200, "b"), Submission(2, 200, "c"),
                   Submission(3, 429, error_code="deadline_unreachable")]
    row = summarise(0.5, 1.2, 1, "sla", submissions, records)
    assert (row["submitted"], row["accepted"], row["rejected"], row["completed"], row["failed"], row["met"]) == \
        (4, 3, 1, 2, 1, 1)
    assert row["attainment"] == 0.25 and row["attainment_of_accepted"] == pytest.approx(1 / 3, abs=1e-4)
    assert row["mean_budget"] == 0.75 and row["mean_budget_at_submission"] == 1.0
    assert (row["p50_s"], row["p95_s"]) == (8.0, pytest.approx(11.6))
    assert row["prediction_errors"] == [0.25, 0.0] and row["prediction_error_p50"] == 0.125


def test_bench_sla_on_the_real_stack_writes_the_report(tmp_path):
    require_binary("redis-server")
    hsa_video("bench", "sla", "--workers", "1", "--loads", "0.5", "--policies", "fixed-0.5", "sla",
              "--duration", "6", "--steps", "12", "--out", str(tmp_path))
    report = json.loads((tmp_path / "sla.json").read_text())
    rows = report["rows"]
    assert [(r["workers"], r["policy"]) for r in rows] == [(1, "fixed-0.5"), (1, "sla")]
    for row in rows:
        assert set(row) >= {"rate", "workers", "policy", "attainment", "mean_budget", "p50_s", "p95_s", "rejected"}
        assert row["submitted"] == rows[0]["submitted"]  # the same arrivals for every policy
        assert row["completed"] + row["failed"] + row["rejected"] + row["other_errors"] == row["submitted"]
    assert rows[0]["mean_budget"] == 0.5
    assert set(report["prediction_error"]) == {"n", "p50", "p95"}
    assert (tmp_path / "sla.png").stat().st_size > 0 and "| workers | load |" in (tmp_path / "sla.md").read_text()
    # the report re-renders from its JSON alone
    (tmp_path / "sla.md").unlink()
    hsa_video("bench", "sla", "--render-only", "--out", str(tmp_path))
    assert (tmp_path / "sla.md").exists()
