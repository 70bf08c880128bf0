"""The production stack, on loopback, for the reliability tests and ``hsa-video bench reliability``:
a durable redis-server (AOF), a moto S3 server behind a TCP proxy that can play "endpoint down",
Celery worker processes (``hsa-video worker``) and gateways (``hsa-video serve`` with
``HSA_REDIS_URL``), all real processes; plus the fault injections and the schema fuzzer.

Jobs are the tiny model at 32x32 with 20 steps: about a second each on this CPU, long enough to be
killed in the middle.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from celery import Celery

from server.jobs import JobRecord, JobStatus
from server.queues import BROKER_TRANSPORT_OPTIONS
from server.settings import hash_api_key
from server.stores.redis_store import RedisJobStore
from tests.cards import stand_in_card  # noqa: F401  (the benchmark imports it from here)
from tests.services import ROOT, Process, free_port, hsa_video_command, service_env, start_redis, wait_until

API_KEY = "sk-reliability-test"
S3_SECRET = "s3-secret-never-logged"
WEBHOOK_SECRET = "whsec_cmVsaWFiaWxpdHktc2VjcmV0LW5ldmVyLWxvZ2dlZA=="
FAST_JOB = {"prompt": "a red circle moving left", "size": "32x32", "steps": 20, "budget": 1.0}


class TcpProxy:
    """Forwards a loopback port to ``target``; ``down()`` makes the endpoint refuse service (new
    connections are reset, open ones cut) until ``up()``."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.available = True
        self._connections: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.available:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # linger 0: a reset, as from a host whose service is down
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.available = False
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connections = []

    def up(self) -> None:
        self.available = True

    def close(self) -> None:
        self._listener.close()


class Stack:
    """One deployment: redis (restartable on the same port), S3 behind a proxy, workers, gateways.
    Redis fsyncs its AOF on every write unless ``redis_fsync="everysec"`` (docker-compose.yml's)."""

    def __init__(self, folder: Path, s3_endpoint: str, redis_fsync: str = "always", **settings: str):
        self.folder = folder
        self.redis_dir = folder / "redis"
        self.redis_dir.mkdir(parents=True)
        self.redis_fsync = redis_fsync
        self.redis, self.redis_url = start_redis(self.redis_dir, appendonly=True, fsync=redis_fsync)
        self.redis_port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.s3_proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
        self.bucket = f"reliability-{folder.name.lower().replace('_', '-')[:40]}"
        self.settings = dict(redis_url=self.redis_url, storage="s3", s3_endpoint_url=self.s3_proxy.url,
                             s3_bucket=self.bucket, s3_access_key_id="test", s3_secret_access_key=S3_SECRET,
                             api_key_sha256=hash_api_key(API_KEY), webhook_secret=WEBHOOK_SECRET,
                             worker_heartbeat_seconds="1", worker_metrics_port="0", torch_threads="1",
                             data_dir=str(folder / "data"), poll_after_ms="100", rate_limit_per_second="0")
        self.settings.update(settings)
        self.workers: list[Process] = []
        self.gateway: Process | None = None
        self.gateway_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.gateway_port}"
        self.store = RedisJobStore(self.redis_url)
        self.http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        self.celery = Celery("reliability-tests", broker=self.redis_url)
        self.celery.conf.update(broker_transport_options=BROKER_TRANSPORT_OPTIONS, accept_content=["json"])

    # processes -----------------------------------------------------------------------------------

    def start_worker(self, command: list[str] | None = None, **settings: str) -> Process:
        index = len(self.workers)
        command = command or hsa_video_command("worker", "--model", "tiny")
        worker = Process(command, self.folder / f"worker-{index}.log", cwd=ROOT,
                         env=service_env(**{**self.settings, "data_dir": str(self.folder / f"data-{index}"), **settings}))
        self.workers.append(worker)
        return worker

    def start_gateway(self, processes: int = 1, extra_args: tuple[str, ...] = ()) -> Process:
        self.gateway = Process(hsa_video_command("serve", "--port", str(self.gateway_port), "--log-level", "info",
                                                 "--workers", str(processes), *extra_args),
                               self.folder / f"gateway-{time.monotonic_ns()}.log", env=service_env(**self.settings))
        wait_until(lambda: httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200, 60,
                   "gateway ready", self.gateway)
        return self.gateway

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` workers list their model and answer Celery's control commands: a worker's model can
        be listed (its pool process loaded it) a moment before its main process consumes, and the fault
        tests find the process running a job through those commands."""
        def live():
            listed = httpx.get(self.base_url + "/readyz", timeout=2).json()["models"].get("tiny", 0) >= count
            started = sum(worker.alive() for worker in self.workers)  # a stand-in card has no process to answer
            return listed and len(self.celery.control.ping(timeout=1.0) or []) >= started

        wait_until(live, timeout, f"{count} live tiny workers", self.gateway)

    def restart_redis(self) -> float:
        """Stop redis (SIGTERM: it syncs its AOF) and start it again on the same port and files;
        returns the seconds it was unreachable."""
        down_at = time.monotonic()
        self.redis.stop()
        self.redis, _ = start_redis(self.redis_dir, appendonly=True, port=self.redis_port, fsync=self.redis_fsync)
        return time.monotonic() - down_at

    def logs(self) -> str:
        processes = [("gateway", self.gateway)] + [(f"worker-{i}", w) for i, w in enumerate(self.workers)]
        return "\n".join(f"--- {name}\n{process.tail(30)}" for name, process in processes if process)

    def close(self) -> None:
        self.http.close()
        self.celery.close()
        for process in [*self.workers, self.gateway]:
            if process is not None:
                process.stop()
        self.store.close()
        self.redis.stop()
        self.s3_proxy.close()

    # jobs ----------------------------------------------------------------------------------------

    def submit(self, **fields) -> str:
        response = self.http.post("/v1/videos", json={**FAST_JOB, **fields})
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def wait_until_computing(self, job_id: str, timeout: float = 60) -> JobRecord:
        """Until a freshly started run of the job has made progress (a pool process is in its steps)."""
        def computing():
            record = self.record(job_id)
            return record.status == JobStatus.in_progress and record.progress >= 10 and record

        return wait_until(computing, timeout, f"job {job_id} computing\n{self.logs()}", interval=0.02)

    def record(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def wait_terminal(self, job_id: str, timeout: float = 120) -> JobRecord:
        return wait_until(lambda: (record := self.record(job_id)).status.terminal and record, timeout,
                          f"job {job_id} to end\n{self.logs()}", interval=0.05)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_proxy.url, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def objects(self, prefix: str = "videos/") -> dict[str, int]:
        """Every object under ``prefix`` in the bucket, with its size (read straight from S3)."""
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def put_object(self, key: str, data: bytes) -> None:
        self.s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    def completions(self, job_id: str) -> int:
        """How many times a worker completed ``job_id`` (each run that reached the end logs it once)."""
        return sum(worker.log_path.read_text(errors="replace").count(f"job {job_id} completed")
                   for worker in self.workers)


@contextmanager
def started_stack(folder: Path, s3_endpoint: str, workers: int = 0, worker_command: list[str] | None = None,
                  stand_in: bool = False, **settings: str):
    """A Stack with ``workers`` workers (``worker_command``, default the tiny model) — or, with
    ``stand_in``, only a registered stand-in card — and a ready gateway; closed on exit."""
    stack = Stack(folder, s3_endpoint, **settings)
    try:
        if stand_in:
            stack.store.register_model(stand_in_card(), "stand-in", ttl_seconds=3600)
        for _ in range(workers):
            stack.start_worker(worker_command)
        stack.start_gateway()
        if workers:
            stack.wait_for_workers(workers)
        yield stack
    finally:
        stack.close()


def running_on(stack: Stack, job_id: str) -> tuple[Process, int]:
    """The worker (``hsa-video worker`` process) and pool process PID running ``job_id``, as Celery
    reports them: ``inspect().active()`` lists each node's tasks with their ``worker_pid``, and node
    names carry the worker's PID (``tiny-<pid>@host``)."""
    # limit: answer as soon as every worker has replied, not after the timeout
    live = [worker for worker in stack.workers if worker.alive()]
    active = stack.celery.control.inspect(timeout=2.0, limit=len(live)).active() or {}
    found = [(node, task["worker_pid"]) for node, tasks in active.items() for task in tasks if task["id"] == job_id]
    assert len(found) == 1, active
    node, pool_pid = found[0]
    worker_pid = int(node.split("@")[0].rsplit("-", 1)[1])
    return next(worker for worker in live if worker.popen.pid == worker_pid), pool_pid


def kill_pool_process_running(stack: Stack, job_id: str) -> int:
    """SIGKILL the pool process that runs ``job_id`` (as the OOM killer would); returns its PID."""
    _, pool_pid = running_on(stack, job_id)
    os.kill(pool_pid, signal.SIGKILL)
    return pool_pid


def assert_consistent_completion(stack: Stack, record: JobRecord, attempts: int) -> None:
    """Completed once, with exactly its one MP4 in storage, and a record that says so."""
    assert record.status == JobStatus.completed, (record, stack.logs())
    assert record.error is None and record.progress == 100 and record.attempts == attempts, record
    assert record.completed_at >= record.started_at >= record.created_at
    objects = stack.objects(f"videos/{record.id}/")
    assert objects == {record.output_key: record.output_bytes}, objects
    assert stack.completions(record.id) == 1


def kill_mid_job(stack: Stack, seed: int) -> tuple[str, float]:
    """Submit a job, SIGKILL its pool process while it computes; returns the job's id and the seconds
    from the kill to its completion elsewhere."""
    job_id = stack.submit(seed=seed)
    stack.wait_until_computing(job_id)
    kill_pool_process_running(stack, job_id)
    killed_at = time.monotonic()
    stack.wait_terminal(job_id)
    return job_id, time.monotonic() - killed_at


def documented_error_codes() -> set[str]:
    """Every ``code`` in docs/api.md's error table: the stable codes clients may rely on."""
    import re

    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| HTTP | `code` |"):]
    table = table[:table.index("\n\n")]
    return set(re.findall(r"`([a-z_]+)`", table)) - {"code"}


@dataclass
class FuzzResult:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)  # 5xx responses
    unstable_errors: list[str] = field(default_factory=list)  # errors that are not JSON with a documented code


def fuzz_gateway(base_url: str, api_key: str, examples_per_operation: int) -> FuzzResult:
    """schemathesis against the gateway's OpenAPI schema: for every operation, ``examples_per_operation``
    valid and as many schema-violating requests (deterministic), each checked for a 5xx and for the
    error shape. Requests carry the API key, so they reach the handlers rather than stop at 401."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    codes = documented_error_codes()
    result = FuzzResult()
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    schema.config.update(base_url=base_url)
    headers = {"Authorization": f"Bearer {api_key}"}

    def check(case) -> None:
        response = case.call(headers=headers, timeout=30)
        result.cases += 1
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
        if response.status_code >= 500:
            result.server_errors.append(where)
        elif response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if code not in codes:
                result.unstable_errors.append(where)

    for operation in schema.get_all_operations():
        operation = operation.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = settings(max_examples=examples_per_operation, deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))(given(case=operation.as_strategy(mode))(check))
            try:
                run()
            except Exception as error:  # schemathesis cannot build a negative case for every operation
                if "Unsatisfiable" not in type(error).__name__:
                    raise
    return result
