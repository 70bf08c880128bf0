"""The production stack on loopback, for benchmarks: redis-server, a Celery worker for one model
(``hsa-video worker``) and the gateway (``hsa-video serve`` with ``HSA_REDIS_URL``), each its own
process group, stopped together. Objects go to local storage under the stack's directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


def wait_for(predicate, timeout: float, what: str, service: Service | None = None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RuntimeError(f"{what}: {service.name} exited early\n{service.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" +
                       (f"\n{service.tail()}" if service is not None else ""))


class LocalStack:
    """``with LocalStack(folder, workers=2) as stack:`` → ``stack.base_url``, ``stack.redis_url``.

    ``workers`` Celery prefork processes serve ``model``, each with ``threads`` torch threads; the
    context manager returns once the gateway is ready and every worker has published its model card.
    """

    def __init__(self, directory: Path, workers: int = 1, model: str = "tiny", threads: int = 1,
                 settings: dict[str, str] | None = None, ready_timeout: float = 300):
        self.directory, self.workers, self.model, self.threads = Path(directory), workers, model, threads
        self.settings, self.ready_timeout = dict(settings or {}), ready_timeout
        self.services: list[Service] = []
        self.base_url = self.redis_url = ""

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSA_")}
        env.update({f"HSA_{k.upper()}": v for k, v in settings.items()})
        env.update(OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        return env

    def __enter__(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        redis_binary = shutil.which("redis-server")
        if redis_binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        redis_port = free_port()
        redis = Service("redis", [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(self.directory)], self.directory / "redis.log")
        self.services.append(redis)
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        import redis as redis_client

        wait_for(lambda: redis_client.Redis.from_url(self.redis_url).ping(), 30, "redis-server", redis)

        settings = {"redis_url": self.redis_url, "data_dir": str(self.directory / "data"),
                    "torch_threads": str(self.threads), "worker_heartbeat_seconds": "1", **self.settings}
        cli = [sys.executable, "-m", "hsa_video.cli"]
        worker = Service("worker", [*cli, "worker", "--model", self.model, "--concurrency", str(self.workers),
                                    "--log-level", "warning"], self.directory / "worker.log", self.env(**settings))
        self.services.append(worker)
        port = free_port()
        gateway = Service("gateway", [*cli, "serve", "--port", str(port), "--log-level", "warning"],
                          self.directory / "gateway.log", self.env(**settings))
        self.services.append(gateway)
        self.base_url = f"http://127.0.0.1:{port}"

        def all_workers_ready() -> bool:
            models = httpx.get(self.base_url + "/v1/models", timeout=5).json()["data"]
            return any(m["id"] == self.model and m["workers"] >= self.workers for m in models)

        wait_for(lambda: httpx.get(self.base_url + "/readyz", timeout=5).status_code == 200, 60, "gateway", gateway)
        wait_for(all_workers_ready, self.ready_timeout, f"{self.workers} {self.model} worker(s)", worker)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services = []

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.tail()}" for s in self.services)
