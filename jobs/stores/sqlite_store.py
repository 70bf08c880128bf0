"""``JobStore`` on one SQLite file: the one-process default needs no Redis, and keeps jobs across restarts.

The embedded worker (a child process of ``hsa-video serve``) shares the file with the gateway and
takes queued jobs straight from the ``jobs`` table (``next_queued``), so this store is also its queue.
WAL mode lets the gateway read while the worker writes progress every step.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..records import JobRecord, JobStatus, ModelCard
from .base import ActiveJobLimit, IdempotencyConflict, PlannerView, merge_cards

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    record TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 3,
    owner TEXT NOT NULL DEFAULT '',
    webhook TEXT,
    webhook_due REAL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    body_hash TEXT,
    job_id TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    model TEXT NOT NULL,
    worker TEXT NOT NULL,
    card TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (model, worker)
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_by_seq ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_by_priority ON jobs (status, model, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_by_webhook_due ON jobs (webhook_due) WHERE webhook_due IS NOT NULL;
"""


class SqliteJobStore:
    def __init__(self, path: str | Path, idempotency_ttl: int = 24 * 3600):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.idempotency_ttl = idempotency_ttl
        self._local = threading.local()
        db = self._connection()
        db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "priority" not in columns:  # a job file from before queue priorities
            db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 3")
        if "owner" not in columns:  # a job file from before per-key tenancy
            db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        if "webhook" not in columns:  # a job file from before the webhook outbox
            db.execute("ALTER TABLE jobs ADD COLUMN webhook TEXT")
            db.execute("ALTER TABLE jobs ADD COLUMN webhook_due REAL")
        db.executescript(_INDEXES)

    def _connection(self) -> sqlite3.Connection:
        # one connection per thread: FastAPI runs sync routes on a thread pool
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self):
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    # records -------------------------------------------------------------------------------------

    @staticmethod
    def _dump(record: JobRecord) -> str:
        return record.model_dump_json(exclude={"status", "progress", "webhook"})

    @staticmethod
    def _load(row) -> JobRecord | None:
        if row is None:
            return None
        status, progress, record, webhook = row
        data = json.loads(record)
        data["status"], data["progress"] = status, progress
        data["webhook"] = json.loads(webhook) if webhook else None
        return JobRecord.model_validate(data)

    def create(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
               max_active: int = 0) -> tuple[JobRecord, bool]:
        with self._transaction() as db:
            if idempotency_key is not None:
                now = time.time()
                db.execute("DELETE FROM idempotency WHERE expires < ?", (now,))
                seen = db.execute("SELECT body_hash, job_id FROM idempotency WHERE key = ?",
                                  (idempotency_key,)).fetchone()
                if seen is not None:
                    if seen[0] != body_hash:
                        raise IdempotencyConflict(seen[1])
                    existing = self._load(db.execute("SELECT status, progress, record, webhook FROM jobs WHERE id = ?",
                                                     (seen[1],)).fetchone())
                    if existing is not None:
                        return existing, False
                db.execute("INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
                           (idempotency_key, body_hash, record.id, now + self.idempotency_ttl))
            if max_active and db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'in_progress')",
                    (record.owner,)).fetchone()[0] >= max_active:
                raise ActiveJobLimit(max_active)  # rolls the transaction back, idempotency claim included
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute("INSERT INTO jobs (id, seq, model, status, progress, record, priority, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.id, seq, record.spec.model, record.status.value, record.progress, self._dump(record),
                        record.spec.priority, record.owner))
        return record, True

    async def create_async(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
                           max_active: int = 0) -> tuple[JobRecord, bool]:
        # a write may wait for the embedded worker's transaction (up to the 30 s busy timeout): not
        # on the event loop
        return await asyncio.to_thread(self.create, record, idempotency_key, body_hash, max_active)

    def get(self, job_id: str) -> JobRecord | None:
        return self._load(self._connection().execute(
            "SELECT status, progress, record, webhook FROM jobs WHERE id = ?", (job_id,)).fetchone())

    async def get_async(self, job_id: str) -> JobRecord | None:
        # a primary-key read in WAL mode, which never waits for a writer: tens of microseconds, less
        # than the thread-pool trip it would take to move it off the event loop
        return self.get(job_id)

    def list(self, limit: int, after: str | None = None, newest_first: bool = True,
             owner: str | None = None) -> tuple[list[JobRecord], bool]:
        db = self._connection()
        order, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        # "owner IS ?" with NULL would match nothing; "? IS NULL OR" keeps one query for both cases
        if after is None:
            rows = db.execute(f"SELECT status, progress, record, webhook FROM jobs WHERE (? IS NULL OR owner = ?) "
                              f"ORDER BY seq {order} LIMIT ?", (owner, owner, limit + 1)).fetchall()
        else:
            anchor = db.execute("SELECT seq FROM jobs WHERE id = ? AND (? IS NULL OR owner = ?)",
                                (after, owner, owner)).fetchone()
            if anchor is None:
                return [], False
            rows = db.execute(f"SELECT status, progress, record, webhook FROM jobs WHERE seq {compare} ? "
                              f"AND (? IS NULL OR owner = ?) ORDER BY seq {order} LIMIT ?",
                              (anchor[0], owner, owner, limit + 1)).fetchall()
        return [self._load(row) for row in rows[:limit]], len(rows) > limit

    # transitions ---------------------------------------------------------------------------------

    def _transition(self, db, record: JobRecord, allowed: tuple[JobStatus, ...]) -> bool:
        marks = ",".join("?" * len(allowed))
        cursor = db.execute(f"UPDATE jobs SET status = ?, progress = ?, record = ? WHERE id = ? AND status IN ({marks})",
                            (record.status.value, record.progress, self._dump(record), record.id,
                             *(status.value for status in allowed)))
        return cursor.rowcount == 1

    def start(self, job_id: str, generation: int | None = None) -> JobRecord | None:
        """As ``JobStore.start``; the row is the queue entry, so there is no stale message to tell apart
        (``generation`` is accepted for the protocol's sake)."""
        with self._transaction() as db:
            record = self._load(db.execute("SELECT status, progress, record, webhook FROM jobs WHERE id = ?",
                                           (job_id,)).fetchone())
            if record is None or record.status.terminal:
                return None
            record.status, record.progress = JobStatus.in_progress, 0.0
            record.started_at = time.time()
            record.attempts += 1
            self._transition(db, record, (JobStatus.queued, JobStatus.in_progress))
        return record

    def next_queued(self, models: list[str]) -> JobRecord | None:
        """The next queued job for one of ``models``: highest priority (lowest number), then oldest."""
        marks = ",".join("?" * len(models))
        return self._load(self._connection().execute(
            f"SELECT status, progress, record, webhook FROM jobs WHERE status = 'queued' AND model IN ({marks}) "
            "ORDER BY priority, seq LIMIT 1", models).fetchone())

    def requeue_in_progress(self, models: list[str]) -> int:
        """After a crash of the only embedded worker, its in-progress jobs go back to the queue."""
        marks = ",".join("?" * len(models))
        with self._transaction() as db:
            return db.execute(f"UPDATE jobs SET status = 'queued', progress = 0 "
                              f"WHERE status = 'in_progress' AND model IN ({marks})", models).rowcount

    def set_progress(self, job_id: str, progress: float) -> None:
        # only a running job's: a worker's late report must not rewind a finished or cancelled one
        self._connection().execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                                   (round(progress, 2), job_id, JobStatus.in_progress.value))

    def finish(self, record: JobRecord) -> bool:
        with self._transaction() as db:
            return self._transition(db, record, (JobStatus.in_progress,))

    def cancel(self, job_id: str) -> JobRecord | None:
        with self._transaction() as db:
            record = self._load(db.execute("SELECT status, progress, record, webhook FROM jobs WHERE id = ?",
                                           (job_id,)).fetchone())
            if record is None or record.status.terminal:
                return record
            record.status = JobStatus.cancelled
            record.completed_at = time.time()
            self._transition(db, record, (JobStatus.queued, JobStatus.in_progress))
        return record

    def is_cancelled(self, job_id: str) -> bool:
        row = self._connection().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or row[0] == JobStatus.cancelled.value

    def update(self, record: JobRecord) -> None:
        with self._transaction() as db:
            self._transition(db, record, (record.status,))

    def delete(self, job_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

    def schedule_webhook(self, job_id: str, due_at: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET webhook_due = ? WHERE id = ?", (due_at, job_id))

    def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[str]:
        with self._transaction() as db:
            ids = [row[0] for row in db.execute(
                "SELECT id FROM jobs WHERE webhook_due IS NOT NULL AND webhook_due <= ? ORDER BY webhook_due LIMIT ?",
                (now, limit))]
            db.executemany("UPDATE jobs SET webhook_due = ? WHERE id = ?", [(now + lease_seconds, i) for i in ids])
        return ids

    def record_webhook(self, job_id: str, outcome: dict | None, due_at: float | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET webhook = COALESCE(?, webhook), webhook_due = ? WHERE id = ?",
                       (None if outcome is None else json.dumps(outcome), due_at, job_id))

    # workers -------------------------------------------------------------------------------------

    def register_model(self, card: ModelCard, worker_id: str, ttl_seconds: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?)",
                       (card.id, worker_id, card.model_dump_json(), time.time() + ttl_seconds))

    def models(self) -> list[ModelCard]:
        rows = self._connection().execute("SELECT card FROM workers WHERE expires > ?", (time.time(),)).fetchall()
        return merge_cards([ModelCard.model_validate_json(row[0]) for row in rows])

    def last_card(self, model: str) -> ModelCard | None:
        # expired rows stay until the next heartbeat of the same worker replaces them
        row = self._connection().execute("SELECT card FROM workers WHERE model = ? ORDER BY expires DESC LIMIT 1",
                                         (model,)).fetchone()
        return None if row is None else ModelCard.model_validate_json(row[0]).model_copy(update={"workers": 0})

    def queued_work(self, model: str, at_floor: bool = False) -> dict[int, float]:
        return self._queued_work_sums(model)[1 if at_floor else 0]

    def _queued_work_sums(self, model: str) -> tuple[dict[int, float], dict[int, float]]:
        """Queued work per priority at the planned budgets and at the floor, in one scan."""
        rows = self._connection().execute(
            "SELECT priority, SUM(COALESCE(json_extract(record, '$.plan.predicted_service_seconds'), 0)), "
            "SUM(COALESCE(json_extract(record, '$.plan.predicted_floor_seconds'), 0)) FROM jobs "
            "WHERE status = 'queued' AND model = ? GROUP BY priority", (model,)).fetchall()
        return ({priority: work for priority, work, _ in rows if work},
                {priority: floor for priority, _, floor in rows if floor})

    def running_jobs(self, model: str) -> list[JobRecord]:
        rows = self._connection().execute(
            "SELECT status, progress, record, webhook FROM jobs WHERE status = 'in_progress' AND model = ?", (model,)).fetchall()
        return [self._load(row) for row in rows]

    async def planner_view_async(self, model: str) -> PlannerView:
        # reads, which WAL mode never makes wait for a writer (as get_async): inline on the event loop
        return PlannerView(*self._queued_work_sums(model), self.running_jobs(model))

    def active_jobs(self, model: str) -> list[JobRecord]:
        rows = self._connection().execute(
            "SELECT status, progress, record, webhook FROM jobs WHERE status IN ('queued', 'in_progress') AND model = ?",
            (model,)).fetchall()
        return [self._load(row) for row in rows]

    def queue_depth(self, model: str) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND model = ?",
                                          (model,)).fetchone()[0]

    async def close_async(self) -> None:
        return None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
