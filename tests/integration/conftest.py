"""Both deployments, started as users start them, driven over HTTP by the official openai client.

- ``embedded``: ``hsa-video serve`` alone (gateway + supervised embedded worker, SQLite store,
  local storage) — the README's run command.
- ``celery``: a real redis-server, a moto S3 server, ``hsa-video worker`` (a Celery worker process
  with the tiny model) and ``hsa-video serve`` as a gateway with ``HSA_REDIS_URL`` set.
"""

import httpx
import pytest
from openai import OpenAI

from jobs.settings import hash_api_key
from tests.services import Process, free_port, hsa_video_command, service_env, wait_until

API_KEY = "sk-integration-test"
WEBHOOK_SECRET = "whsec_aW50ZWdyYXRpb24tdGVzdC1zZWNyZXQ="


class Deployment:
    def __init__(self, name: str, base_url: str, processes: dict[str, Process], worker_metrics_url: str):
        self.name, self.base_url, self.processes = name, base_url, processes
        self.worker_metrics_url = worker_metrics_url  # where worker metrics are scraped

    def client(self, api_key: str = API_KEY) -> OpenAI:
        return OpenAI(base_url=self.base_url + "/v1", api_key=api_key, max_retries=0, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{process.tail(60)}" for name, process in self.processes.items())


def _wait_ready(base_url: str, gateway: Process) -> None:
    def ready():
        response = httpx.get(base_url + "/readyz", timeout=5)
        return response.status_code == 200 and response.json()["models"].get("tiny")

    wait_until(ready, 120, "gateway ready with a live tiny worker", gateway, interval=0.3)


@pytest.fixture(scope="module", params=["embedded", "celery"])
def deployment(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    settings = dict(api_key_sha256=hash_api_key(API_KEY), webhook_secret=WEBHOOK_SECRET, poll_after_ms="100",
                    worker_heartbeat_seconds="2", webhook_backoff_seconds="0.2", data_dir=str(folder / "data"),
                    shadow_sample_rate="1", webhook_allowed_networks="127.0.0.0/8")
    processes: dict[str, Process] = {}
    worker_metrics_port = free_port()
    if request.param == "celery":
        settings.update(worker_metrics_port=str(worker_metrics_port), redis_url=request.getfixturevalue("redis_url"), storage="s3",
                        s3_endpoint_url=request.getfixturevalue("s3_endpoint"), s3_bucket="integration",
                        s3_access_key_id="test", s3_secret_access_key="test")
        processes["worker"] = Process(hsa_video_command("worker", "--model", "tiny"), folder / "worker.log",
                                      env=service_env(**settings))
    port = free_port()
    processes["gateway"] = Process(hsa_video_command("serve", "--port", str(port), "--log-level", "warning"),
                                   folder / "gateway.log", env=service_env(**settings))
    base_url = f"http://127.0.0.1:{port}"
    # one-process mode: the gateway's /metrics carries the embedded worker's too
    worker_metrics = f"http://127.0.0.1:{worker_metrics_port}/metrics" if request.param == "celery" \
        else base_url + "/metrics"
    try:
        _wait_ready(base_url, processes["gateway"])
        yield Deployment(request.param, base_url, processes, worker_metrics)
    finally:
        for process in processes.values():
            process.stop()
