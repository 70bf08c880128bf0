"""The production stack on loopback, for benchmarks: redis-server, a Celery worker for one model
(``hsa-video worker``) and the gateway (``hsa-video serve`` with ``HSA_REDIS_URL``), each its own
process group, stopped together. Objects go to local storage under the stack's directory.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from .processes import Process, free_port, hsa_video_command, service_env, start_redis, wait_until


class LocalStack:
    """``with LocalStack(folder, workers=2) as stack:`` → ``stack.base_url``, ``stack.redis_url``.

    ``workers`` Celery prefork processes serve ``model``, each with ``threads`` torch threads; the
    context manager returns once the gateway is ready and every worker has published its model card.
    """

    def __init__(self, directory: Path, workers: int = 1, model: str = "tiny", threads: int = 1,
                 settings: dict[str, str] | None = None, ready_timeout: float = 300):
        self.directory, self.workers, self.model, self.threads = Path(directory), workers, model, threads
        self.settings, self.ready_timeout = dict(settings or {}), ready_timeout
        self.services: list[Process] = []
        self.base_url = self.redis_url = ""

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
        self.directory.mkdir(parents=True, exist_ok=True)
        redis, self.redis_url = start_redis(self.directory)
        self.services.append(redis)
        settings = {"redis_url": self.redis_url, "data_dir": str(self.directory / "data"),
                    "torch_threads": str(self.threads), "worker_heartbeat_seconds": "1", **self.settings}
        env = service_env(omp_threads=self.threads, **settings)
        worker = Process(hsa_video_command("worker", "--model", self.model, "--concurrency", str(self.workers),
                                           "--log-level", "warning"), self.directory / "worker.log", env, name="worker")
        self.services.append(worker)
        port = free_port()
        gateway = Process(hsa_video_command("serve", "--port", str(port), "--log-level", "warning"),
                          self.directory / "gateway.log", env, name="gateway")
        self.services.append(gateway)
        self.base_url = f"http://127.0.0.1:{port}"

        def all_workers_ready() -> bool:
            models = httpx.get(self.base_url + "/v1/models", timeout=5).json()["data"]
            return any(m["id"] == self.model and m["workers"] >= self.workers for m in models)

        wait_until(lambda: httpx.get(self.base_url + "/readyz", timeout=5).status_code == 200, 60, "gateway",
                   gateway, interval=0.2)
        wait_until(all_workers_ready, self.ready_timeout, f"{self.workers} {self.model} worker(s)", worker,
                   interval=0.2)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services = []

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(30)}" for p in self.services)
