"""One deployment on loopback: a durable redis-server (AOF), S3 (a moto server behind a TCP proxy that
can play "endpoint down") or local storage, Celery worker processes (``hsa-video worker``) and a
gateway (``hsa-video serve`` with ``HSA_REDIS_URL``), all real processes; plus the faults the
reliability runs inject.

``FAST_JOB`` is the tiny model at 32x32 with 20 steps: about a second on one CPU core, long enough
to be killed in the middle.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from celery import Celery

from jobs.queues import BROKER_TRANSPORT_OPTIONS
from jobs.records import JobRecord, JobStatus
from jobs.settings import hash_api_key
from jobs.stores.redis_store import RedisJobStore

from .cards import stand_in_card
from .processes import Process, free_port, hsa_video_command, service_env, start_redis, wait_until

SOURCE_ROOT = Path(__file__).resolve().parents[2]
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
    """One deployment: redis (restartable on the same port), workers, a gateway, and objects in S3 at
    ``s3_endpoint`` (behind a ``TcpProxy``) or, without one, in a local folder. Requests need
    ``api_key`` (None: open mode). Redis fsyncs its AOF on every write unless ``redis_fsync="everysec"``
    (docker-compose.yml's). ``settings``: more ``HSA_*`` settings for every process."""

    def __init__(self, folder: Path, s3_endpoint: str | None = None, redis_fsync: str = "always",
                 api_key: str | None = API_KEY, redis_password: str | None = None, **settings: str):
        self.folder = Path(folder)
        self.redis_dir = self.folder / "redis"
        self.redis_dir.mkdir(parents=True)
        self.redis_fsync, self.redis_password = redis_fsync, redis_password
        self.redis, self.redis_url = start_redis(self.redis_dir, appendonly=True, fsync=redis_fsync,
                                                 password=redis_password)
        self.redis_port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.settings = dict(redis_url=self.redis_url, webhook_secret=WEBHOOK_SECRET, worker_heartbeat_seconds="1",
                             worker_metrics_port="0", torch_threads="1", data_dir=str(self.folder / "data"),
                             poll_after_ms="100", rate_limit_per_second="0",
                             webhook_allowed_networks="127.0.0.0/8")  # the receivers are on loopback
        self.s3_proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1])) if s3_endpoint else None
        self.bucket = f"reliability-{self.folder.name.lower().replace('_', '-')[:40]}"
        if self.s3_proxy:
            self.settings.update(storage="s3", s3_endpoint_url=self.s3_proxy.url, s3_bucket=self.bucket,
                                 s3_access_key_id="test", s3_secret_access_key=S3_SECRET)
        else:  # the gateway serves the files the workers write: one data folder for every process
            self.settings.update(storage="local")
        if api_key:
            self.settings["api_key_sha256"] = hash_api_key(api_key)
        self.settings.update(settings)
        self.workers: list[Process] = []
        self.gateway: Process | None = None
        self.gateway_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.gateway_port}"
        self.store = RedisJobStore(self.redis_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.celery = Celery("hsa-harness", broker=self.redis_url)
        self.celery.conf.update(broker_transport_options=BROKER_TRANSPORT_OPTIONS, accept_content=["json"])

    # processes -----------------------------------------------------------------------------------

    def start_worker(self, command: list[str] | None = None, concurrency: int = 1, **settings: str) -> Process:
        """A worker process (``command``, default ``hsa-video worker --model tiny``) with ``concurrency``
        pool processes."""
        index = len(self.workers)
        command = command or hsa_video_command("worker", "--model", "tiny", "--concurrency", str(concurrency))
        data_dir = str(self.folder / f"data-{index}") if self.s3_proxy else self.settings["data_dir"]
        worker = Process(command, self.folder / f"worker-{index}.log", cwd=SOURCE_ROOT,
                         env=service_env(**{**self.settings, "data_dir": data_dir, **settings}))
        self.workers.append(worker)
        return worker

    def start_gateway(self, processes: int = 1, extra_args: tuple[str, ...] = ()) -> Process:
        self.gateway = Process(hsa_video_command("serve", "--port", str(self.gateway_port), "--log-level", "info",
                                                 "--workers", str(processes), *extra_args),
                               self.folder / f"gateway-{time.monotonic_ns()}.log", env=service_env(**self.settings))
        def reachable_dependencies() -> bool:  # workers may start after the gateway
            checks = httpx.get(self.base_url + "/readyz", timeout=5).json()["checks"]
            return all(value == "ok" for name, value in checks.items() if name != "workers")

        wait_until(reachable_dependencies, 60, "gateway ready", self.gateway)
        return self.gateway

    def wait_for_workers(self, count: int, model: str = "tiny", timeout: float = 300) -> None:
        """Until ``count`` pool processes list ``model`` and every worker process answers Celery's control
        commands: a model can be listed (its pool process loaded it) a moment before its worker consumes,
        and the fault injections find the process running a job through those commands."""
        def live():
            listed = httpx.get(self.base_url + "/readyz", timeout=2).json()["models"].get(model, 0) >= count
            started = sum(worker.alive() for worker in self.workers)  # a stand-in card has no process to answer
            return listed and len(self.celery.control.ping(timeout=1.0) or []) >= started

        wait_until(live, timeout, f"{count} live {model} workers", self.gateway)

    def restart_redis(self) -> float:
        """Stop redis (SIGTERM: it syncs its AOF) and start it again on the same port and files;
        returns the seconds it was unreachable."""
        down_at = time.monotonic()
        self.redis.stop()
        self.redis, _ = start_redis(self.redis_dir, appendonly=True, port=self.redis_port, fsync=self.redis_fsync,
                                    password=self.redis_password)
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
        if self.s3_proxy:
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

        assert self.s3_proxy, "this stack keeps its objects in a local folder"
        return boto3.client("s3", endpoint_url=self.s3_proxy.url, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def objects(self, prefix: str = "videos/") -> dict[str, int]:
        """Every object under ``prefix``, with its size (read straight from S3 or the folder)."""
        if not self.s3_proxy:
            root = Path(self.settings["data_dir"]) / "objects"
            return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*")
                    if path.is_file() and str(path.relative_to(root)).startswith(prefix)}
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def put_object(self, key: str, data: bytes) -> None:
        self.s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    def completions(self, job_id: str) -> int:
        """How many times a worker completed ``job_id`` (each run that reached the end logs it once)."""
        return sum(worker.log_path.read_text(errors="replace").count(f"job {job_id} completed")
                   for worker in self.workers)


@contextmanager
def started_stack(folder: Path, s3_endpoint: str | None, workers: int = 0, worker_command: list[str] | None = None,
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
    found = [(node, task["worker_pid"]) for node, tasks in active.items() for task in tasks
             if task["args"][0]["job_id"] == job_id]
    assert len(found) == 1, active
    node, pool_pid = found[0]
    worker_pid = int(node.split("@")[0].rsplit("-", 1)[1])
    return next(worker for worker in live if worker.popen.pid == worker_pid), pool_pid


def kill_pool_process_running(stack: Stack, job_id: str) -> int:
    """SIGKILL the pool process that runs ``job_id`` (as the OOM killer would); returns its PID."""
    _, pool_pid = running_on(stack, job_id)
    os.kill(pool_pid, signal.SIGKILL)
    return pool_pid


def kill_mid_job(stack: Stack, seed: int) -> tuple[str, float]:
    """Submit a job, SIGKILL its pool process while it computes; returns the job's id and the seconds
    from the kill to its completion elsewhere."""
    job_id = stack.submit(seed=seed)
    stack.wait_until_computing(job_id)
    kill_pool_process_running(stack, job_id)
    killed_at = time.monotonic()
    stack.wait_terminal(job_id)
    return job_id, time.monotonic() - killed_at
