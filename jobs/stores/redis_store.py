"""``JobStore`` on Redis: durable across gateway restarts, shared by every gateway and worker.

Keys (prefix ``hsa:``)::

    job:{id}            hash: status, progress, record (JSON of the rest)
    jobs                sorted set of ids by creation time (listing)
    queued:{model}      set of queued ids (queue depth per model)
    running:{model}     set of in-progress ids
    queued_work:{model} hash priority → predicted service seconds of the queued jobs (the SLA
                        planner's view of the queue, O(1) to read however long the queue is)
    queued_floor:{model} the same at each job's smallest budget (what the queue shrinks to)
    owner:{o}:jobs      sorted set of one API key's ids by creation time (its listing)
    owner:{o}:active    set of one API key's queued + in-progress ids (its concurrent-job cap)
    idem:{key}          JSON {body_hash, job_id}, expires after ``idempotency_ttl``
    model:{id}:{worker} a live worker's card, expires unless the worker heartbeats
    worker:{host-pid}   a live Celery worker (its main process), expires unless it heartbeats; a
                        running job's hash names it (``worker``) so its jobs can be re-queued if it dies

A create is one Lua script (the record, its indexes and queued work, the idempotency claim and the
per-key cap, all or nothing); the gateway publishes the job's Celery task after it. Status changes are
compare-and-set Lua scripts, so a cancel racing a worker's finish has one winner, and a start checks
the queue entry's generation (``generation`` in the job's hash), so a stale message never runs a job.
Commands that fail on a dropped connection are retried with backoff for about 15 s, so gateways and
workers ride out a Redis restart instead of failing the requests and jobs in flight.
"""

from __future__ import annotations

import json
import time

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..records import JobRecord, JobStatus, ModelCard
from .base import ActiveJobLimit, IdempotencyConflict, PlannerView, merge_cards

# 0.05, 0.1, 0.2, 0.4, 0.8, then 1 s per try: ~15 s of outage ridden out (a restart takes ~1 s)
RECONNECT_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20)
ASYNC_RECONNECT_RETRY = redis.asyncio.retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20)

# KEYS[1] job hash, KEYS[2] and KEYS[3] (optional) the model's queued_work and queued_floor hashes;
# ARGV[1] allowed current statuses
# (comma-separated); ARGV[2] new status; ARGV[3] new record JSON or ""; ARGV[4] new progress or ""
# (absent: unchanged); ARGV[5] the generation the job must be at or "" (any), ARGV[6] a new generation
# or ""; returns 1 when the transition happened. One script, so no reader sees the new status with the
# old progress, and a job leaves the queued work exactly once.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
if ARGV[5] and ARGV[5] ~= '' and (redis.call('HGET', KEYS[1], 'generation') or '1') ~= ARGV[5] then return 0 end
for allowed in string.gmatch(ARGV[1], '[^,]+') do
  if allowed == current then
    if current == 'queued' and ARGV[2] ~= 'queued' and KEYS[2] then
      local priority, work, floor = unpack(redis.call('HMGET', KEYS[1], 'priority', 'work', 'floor'))
      if work then redis.call('HINCRBYFLOAT', KEYS[2], priority, -tonumber(work)) end
      if floor and KEYS[3] then redis.call('HINCRBYFLOAT', KEYS[3], priority, -tonumber(floor)) end
    end
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'record', ARGV[3]) end
    if ARGV[4] and ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
    if ARGV[6] and ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'generation', ARGV[6]) end
    return 1
  end
end
return 0
"""


# KEYS: the outbox; ARGV: now, lease end, limit. Due ids, each moved to the lease's end in the same step.
_CLAIM_WEBHOOKS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""

# KEYS: job hash, the outbox; ARGV: outcome JSON or "" (unchanged), due time or "" (done), job id. A
# deleted job stays deleted.
_RECORD_WEBHOOK = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[3]) return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'webhook', ARGV[1]) end
if ARGV[2] == '' then redis.call('ZREM', KEYS[2], ARGV[3]) else redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""

# One script, so a create is one round trip and all-or-nothing: the idempotency claim, the per-key
# cap and the record with its indexes and queued work land together or not at all.
# KEYS: job hash, jobs index, owner's jobs, owner's active set, model's queued set, queued_work,
# queued_floor, idempotency key or ""; ARGV: status, progress, record JSON, priority, work, floor,
# created_at, job id, max_active, idempotency claim JSON or "", body hash, idempotency TTL, job key
# prefix, generation. Returns {"created"}, {"replay", id}, {"conflict", id} or {"limit"}.
_CREATE = """
if ARGV[10] ~= '' then
  local seen = redis.call('GET', KEYS[8])
  if seen then
    seen = cjson.decode(seen)
    if seen['body_hash'] ~= ARGV[11] then return {'conflict', seen['job_id']} end
    if redis.call('EXISTS', ARGV[13] .. seen['job_id']) == 1 then return {'replay', seen['job_id']} end
  end
end
local max_active = tonumber(ARGV[9])
if max_active > 0 and redis.call('SCARD', KEYS[4]) >= max_active then return {'limit'} end
if ARGV[10] ~= '' then redis.call('SET', KEYS[8], ARGV[10], 'EX', ARGV[12]) end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'progress', ARGV[2], 'record', ARGV[3], 'priority', ARGV[4],
           'work', ARGV[5], 'floor', ARGV[6], 'generation', ARGV[14])
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBYFLOAT', KEYS[6], ARGV[4], ARGV[5]) end
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBYFLOAT', KEYS[7], ARGV[4], ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
redis.call('SADD', KEYS[4], ARGV[8])
redis.call('SADD', KEYS[5], ARGV[8])
return {'created'}
"""

# KEYS[1] the model's queued_work, KEYS[2] queued_floor, KEYS[3] running set; ARGV[1] job key prefix.
# Returns {queued_work fields, queued_floor fields, {each running job's hash fields}}: the SLA planner's
# whole view in one round trip, however many jobs run.
_PLANNER_VIEW = """
local running = {}
for _, job_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  running[#running + 1] = redis.call('HGETALL', ARGV[1] .. job_id)
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), running}
"""

_SET_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') == 'in_progress' then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end
"""


class RedisJobStore:
    def __init__(self, url: str, prefix: str = "hsa:", idempotency_ttl: int = 24 * 3600):
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                          health_check_interval=30, retry=RECONNECT_RETRY)
        self.prefix, self.url = prefix, url
        self.idempotency_ttl = idempotency_ttl
        # the gateway's status polls read on its event loop; connections open on first use, on that loop
        self.redis_async = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                                        socket_connect_timeout=5, health_check_interval=30,
                                                        retry=ASYNC_RECONNECT_RETRY)
        self._transition = self.redis.register_script(_TRANSITION)
        self._claim_webhooks = self.redis.register_script(_CLAIM_WEBHOOKS)
        self._record_webhook = self.redis.register_script(_RECORD_WEBHOOK)
        self._set_progress = self.redis.register_script(_SET_PROGRESS)
        self._create = self.redis.register_script(_CREATE)
        self._create_on_loop = self.redis_async.register_script(_CREATE)
        self._planner_view = self.redis_async.register_script(_PLANNER_VIEW)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def ping(self) -> None:
        self.redis.ping()

    # records -------------------------------------------------------------------------------------

    @staticmethod
    def _dump(record: JobRecord) -> str:
        return record.model_dump_json(exclude={"status", "progress", "webhook"})

    @staticmethod
    def _load(fields: dict[str, str]) -> JobRecord | None:
        if not fields or "record" not in fields:
            return None
        data = json.loads(fields["record"])
        data["status"] = fields["status"]
        data["progress"] = float(fields.get("progress", 0.0))
        data["webhook"] = json.loads(fields["webhook"]) if fields.get("webhook") else None
        return JobRecord.model_validate(data)

    def create(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
               max_active: int = 0) -> tuple[JobRecord, bool]:
        for _ in range(2):
            outcome = self._create(*self._create_call(record, idempotency_key, body_hash, max_active))
            if (result := self._created(record, outcome, max_active)) is not None:
                return result
            if (replayed := self.get(outcome[1])) is not None:
                return replayed, False
        raise RuntimeError(f"idempotency key {idempotency_key!r} keeps naming a deleted job")

    async def create_async(self, record: JobRecord, idempotency_key: str | None = None, body_hash: str | None = None,
                           max_active: int = 0) -> tuple[JobRecord, bool]:
        for _ in range(2):
            outcome = await self._create_on_loop(*self._create_call(record, idempotency_key, body_hash, max_active))
            if (result := self._created(record, outcome, max_active)) is not None:
                return result
            if (replayed := await self.get_async(outcome[1])) is not None:
                return replayed, False
        raise RuntimeError(f"idempotency key {idempotency_key!r} keeps naming a deleted job")

    def _create_call(self, record: JobRecord, idempotency_key: str | None, body_hash: str | None,
                     max_active: int) -> tuple[list[str], list]:
        model, owner = record.spec.model, record.owner
        keys = [self._key("job", record.id), self._key("jobs"), self._key("owner", owner, "jobs"),
                self._key("owner", owner, "active"), self._key("queued", model), *self._queue_keys(model),
                self._key("idem", idempotency_key) if idempotency_key is not None else ""]
        claim = json.dumps({"body_hash": body_hash, "job_id": record.id}) if idempotency_key is not None else ""
        args = [record.status.value, record.progress, self._dump(record), record.spec.priority,
                record.plan.predicted_service_seconds or 0.0, record.plan.predicted_floor_seconds or 0.0,
                record.created_at,
                record.id, max_active, claim, body_hash or "", self.idempotency_ttl, self._key("job", ""),
                record.generation]
        return keys, args

    @staticmethod
    def _created(record: JobRecord, outcome: list[str], max_active: int) -> tuple[JobRecord, bool] | None:
        """The create's result from the script's answer; None when it replays an earlier job (to be read)."""
        if outcome[0] == "created":
            return record, True
        if outcome[0] == "conflict":
            raise IdempotencyConflict(outcome[1])
        if outcome[0] == "limit":
            raise ActiveJobLimit(max_active)
        return None

    @staticmethod
    def _pairs(fields: list[str]) -> dict[str, str]:
        """A hash as a script returns it (a flat field, value, … list) → a dict, as ``HGETALL`` gives it."""
        return dict(zip(fields[::2], fields[1::2]))

    def get(self, job_id: str) -> JobRecord | None:
        return self._load(self.redis.hgetall(self._key("job", job_id)))

    async def get_async(self, job_id: str) -> JobRecord | None:
        return self._load(await self.redis_async.hgetall(self._key("job", job_id)))

    def list(self, limit: int, after: str | None = None, newest_first: bool = True,
             owner: str | None = None) -> tuple[list[JobRecord], bool]:
        index = self._key("jobs") if owner is None else self._key("owner", owner, "jobs")
        rank_of = self.redis.zrevrank if newest_first else self.redis.zrank
        range_of = self.redis.zrevrange if newest_first else self.redis.zrange
        start = 0
        if after is not None:
            rank = rank_of(index, after)
            if rank is None:
                return [], False
            start = rank + 1
        ids = range_of(index, start, start + limit)  # one extra tells whether more follow
        pipe = self.redis.pipeline()
        for job_id in ids[:limit]:
            pipe.hgetall(self._key("job", job_id))
        records = [r for r in (self._load(f) for f in pipe.execute()) if r is not None]
        return records, len(ids) > limit

    # transitions ---------------------------------------------------------------------------------

    def start(self, job_id: str, generation: int | None = None) -> JobRecord | None:
        record = self.get(job_id)
        if record is None or record.status.terminal or (generation is not None and record.generation != generation):
            return None
        record.status = JobStatus.in_progress
        record.started_at = time.time()
        record.attempts += 1
        record.progress = 0.0
        if not self._transition(keys=[self._key("job", job_id), *self._queue_keys(record.spec.model)],
                                args=["queued,in_progress", "in_progress", self._dump(record), 0.0,
                                      record.generation, ""]):
            return None
        pipe = self.redis.pipeline()
        pipe.srem(self._key("queued", record.spec.model), job_id)
        pipe.sadd(self._key("running", record.spec.model), job_id)
        pipe.execute()
        return record

    def set_progress(self, job_id: str, progress: float) -> None:
        # only while running: a duplicate delivery still computing must not rewind a finished job
        self._set_progress(keys=[self._key("job", job_id)], args=[round(progress, 2)])

    def finish(self, record: JobRecord) -> bool:
        pipe_ok = self._transition(keys=[self._key("job", record.id)],
                                   args=["in_progress", record.status.value, self._dump(record), record.progress])
        if pipe_ok:
            pipe = self.redis.pipeline()
            pipe.srem(self._key("running", record.spec.model), record.id)
            pipe.srem(self._key("owner", record.owner, "active"), record.id)
            pipe.execute()
        return bool(pipe_ok)

    def cancel(self, job_id: str) -> JobRecord | None:
        record = self.get(job_id)
        if record is None:
            return None
        if record.status.terminal:
            return record
        record.status = JobStatus.cancelled
        record.completed_at = time.time()
        if self._transition(keys=[self._key("job", job_id), *self._queue_keys(record.spec.model)],
                            args=["queued,in_progress", "cancelled", self._dump(record)]):
            pipe = self.redis.pipeline()
            pipe.srem(self._key("queued", record.spec.model), job_id)
            pipe.srem(self._key("running", record.spec.model), job_id)
            pipe.srem(self._key("owner", record.owner, "active"), job_id)
            pipe.execute()
        return self.get(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        status = self.redis.hget(self._key("job", job_id), "status")
        return status is None or status == JobStatus.cancelled.value

    def update(self, record: JobRecord) -> None:
        self._transition(keys=[self._key("job", record.id)],
                         args=[record.status.value, record.status.value, self._dump(record)])

    def delete(self, job_id: str) -> bool:
        record = self.get(job_id)
        pipe = self.redis.pipeline()
        pipe.delete(self._key("job", job_id))
        pipe.zrem(self._key("jobs"), job_id)
        pipe.zrem(self._key("webhooks"), job_id)
        if record is not None:
            pipe.srem(self._key("queued", record.spec.model), job_id)
            pipe.srem(self._key("running", record.spec.model), job_id)
            pipe.zrem(self._key("owner", record.owner, "jobs"), job_id)
            pipe.srem(self._key("owner", record.owner, "active"), job_id)
            if record.status == JobStatus.queued:
                self._add_queued_work(pipe, record, -1)
        return bool(pipe.execute()[0])

    # webhook outbox: a sorted set of job ids by due time; the outcome is the job hash's own field --

    def schedule_webhook(self, job_id: str, due_at: float) -> None:
        self.redis.zadd(self._key("webhooks"), {job_id: due_at})

    def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[str]:
        return list(self._claim_webhooks(keys=[self._key("webhooks")], args=[now, now + lease_seconds, limit]))

    def record_webhook(self, job_id: str, outcome: dict | None, due_at: float | None) -> None:
        self._record_webhook(keys=[self._key("job", job_id), self._key("webhooks")],
                             args=["" if outcome is None else json.dumps(outcome), "" if due_at is None else due_at,
                                   job_id])

    # workers -------------------------------------------------------------------------------------

    def register_model(self, card: ModelCard, worker_id: str, ttl_seconds: float) -> None:
        text = card.model_dump_json()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key("model", card.id, worker_id), text, px=max(1, int(ttl_seconds * 1000)))
        pipe.set(self._key("last-card", card.id), text)  # no expiry: what a restarting worker serves again
        pipe.execute()

    def last_card(self, model: str) -> ModelCard | None:
        text = self.redis.get(self._key("last-card", model))
        return None if text is None else ModelCard.model_validate_json(text).model_copy(update={"workers": 0})

    def models(self) -> list[ModelCard]:
        keys = list(self.redis.scan_iter(match=self._key("model", "*"), count=500))
        values = self.redis.mget(keys) if keys else []
        cards = []
        for value in values:
            if value is not None:
                # the full card, including the limits the gateway validates against
                data = json.loads(value)
                cards.append(ModelCard.model_validate(data))
        return merge_cards(cards)

    def queue_depth(self, model: str) -> int:
        return int(self.redis.scard(self._key("queued", model)))

    # orphans: jobs whose worker died with its whole host (Celery re-delivers those only after the
    # 6 h visibility timeout; a lost pool process alone is re-queued by Celery at once)

    def claim(self, job_id: str, worker: str) -> None:
        """Record which worker (its main process) is about to run the job."""
        self.redis.hset(self._key("job", job_id), "worker", worker)

    def mark_worker_alive(self, worker: str, ttl_seconds: float) -> None:
        self.redis.set(self._key("worker", worker), 1, px=max(1, int(ttl_seconds * 1000)))

    def orphaned_jobs(self, model: str) -> list[JobRecord]:
        """In-progress jobs of ``model`` whose worker's heartbeat expired (the worker is gone)."""
        ids = list(self.redis.smembers(self._key("running", model)))
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hget(self._key("job", job_id), "worker")
        workers = pipe.execute()
        claimed = [(job_id, worker) for job_id, worker in zip(ids, workers) if worker]
        pipe = self.redis.pipeline()
        for _, worker in claimed:
            pipe.exists(self._key("worker", worker))
        alive = pipe.execute()
        records = [self.get(job_id) for (job_id, _), live in zip(claimed, alive) if not live]
        return [r for r in records if r is not None and r.status == JobStatus.in_progress]

    def requeue(self, record: JobRecord) -> bool:
        """in_progress → queued under the next generation (once: concurrent reconcilers race on the
        compare-and-set); the caller then publishes it."""
        current = record.generation
        record.status, record.progress = JobStatus.queued, 0.0
        record.generation, record.published_at = current + 1, time.time()
        if not self._transition(keys=[self._key("job", record.id)],
                                args=["in_progress", "queued", self._dump(record), 0.0, current, record.generation]):
            return False
        pipe = self.redis.pipeline()
        pipe.hdel(self._key("job", record.id), "worker")
        pipe.srem(self._key("running", record.spec.model), record.id)
        pipe.sadd(self._key("queued", record.spec.model), record.id)
        self._add_queued_work(pipe, record, +1)
        pipe.execute()
        return True

    def republish(self, record: JobRecord) -> bool:
        """A queued job's next generation (once: a compare-and-set on status and generation), whose message
        the caller then publishes; its older messages, should any still arrive, are skipped."""
        current = record.generation
        record.generation, record.published_at = current + 1, time.time()
        return bool(self._transition(keys=[self._key("job", record.id)],
                                     args=["queued", "queued", self._dump(record), "", current, record.generation]))

    def fail_queued(self, record: JobRecord) -> bool:
        """queued → ``record.status`` (failed) with its fields, at the generation it was read at; False if it
        started, was cancelled or was published again meanwhile."""
        if not self._transition(keys=[self._key("job", record.id), *self._queue_keys(record.spec.model)],
                                args=["queued", record.status.value, self._dump(record), "", record.generation, ""]):
            return False
        pipe = self.redis.pipeline()
        pipe.srem(self._key("queued", record.spec.model), record.id)
        pipe.srem(self._key("owner", record.owner, "active"), record.id)
        pipe.execute()
        return True

    def queued_jobs(self, model: str) -> list[JobRecord]:
        """The jobs of ``model`` waiting for a worker."""
        ids = list(self.redis.smembers(self._key("queued", model)))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key("job", job_id))
        records = [self._load(fields) for fields in pipe.execute()]
        return [r for r in records if r is not None and r.status == JobStatus.queued]

    def _add_queued_work(self, pipe, record: JobRecord, sign: int) -> None:
        priority = str(record.spec.priority)
        if record.plan.predicted_service_seconds:
            pipe.hincrbyfloat(self._key("queued_work", record.spec.model), priority,
                              sign * record.plan.predicted_service_seconds)
        if record.plan.predicted_floor_seconds:
            pipe.hincrbyfloat(self._key("queued_floor", record.spec.model), priority,
                              sign * record.plan.predicted_floor_seconds)

    def _queue_keys(self, model: str) -> list[str]:
        return [self._key("queued_work", model), self._key("queued_floor", model)]

    def queued_work(self, model: str, at_floor: bool = False) -> dict[int, float]:
        return self._work(self.redis.hgetall(self._key("queued_floor" if at_floor else "queued_work", model)))

    @staticmethod
    def _work(fields: dict[str, str]) -> dict[int, float]:
        return {int(priority): max(0.0, float(seconds)) for priority, seconds in fields.items()}  # float drift

    def running_jobs(self, model: str) -> list[JobRecord]:
        return self._running(self.redis.smembers(self._key("running", model)))

    def _running(self, job_ids) -> list[JobRecord]:
        if not job_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._key("job", job_id))
        return self._in_progress(pipe.execute())

    def _in_progress(self, hashes: list[dict[str, str]]) -> list[JobRecord]:
        records = [self._load(fields) for fields in hashes]
        return [r for r in records if r is not None and r.status == JobStatus.in_progress]

    async def planner_view_async(self, model: str) -> PlannerView:
        keys = [self._key("queued_work", model), self._key("queued_floor", model), self._key("running", model)]
        work, floor, running = await self._planner_view(keys=keys, args=[self._key("job", "")])
        return PlannerView(self._work(self._pairs(work)), self._work(self._pairs(floor)),
                           self._in_progress([self._pairs(fields) for fields in running]))

    def active_jobs(self, model: str) -> list[JobRecord]:
        ids = self.redis.sunion(self._key("queued", model), self._key("running", model))
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self._key("job", job_id))
        records = [self._load(fields) for fields in pipe.execute()]
        return [r for r in records if r is not None and not r.status.terminal]

    async def close_async(self) -> None:
        await self.redis_async.aclose()

    def close(self) -> None:
        self.redis.close()
