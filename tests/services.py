"""Real services for the tests: redis-server, a moto S3 server, and our own processes.

Each starts on a free loopback port and is stopped (process group and all) when the test session
ends. Without redis-server on PATH the tests that need it skip — except under CI=true, where a
missing service is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hsa_video.harness import processes
from hsa_video.harness.processes import (
    Process,
    free_port,
    hsa_video_command,
    service_env,
    start_moto,
    wait_until,
)

__all__ = ["ROOT", "Process", "WebhookReceiver", "free_port", "hsa_video_command", "require_binary", "service_env",
           "start_moto", "start_redis", "wait_until"]

ROOT = Path(__file__).resolve().parents[1]


def require_binary(name: str, package: str | None = None) -> str:
    """The binary's path; without it the test skips, or under CI fails (``package``: its Debian package)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y {package or name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def start_redis(directory: Path, appendonly: bool = False, port: int | None = None,
                fsync: str = "always") -> tuple[Process, str]:
    """``processes.start_redis``, skipping the test (failing it under CI) without redis-server."""
    require_binary("redis-server")
    return processes.start_redis(directory, appendonly, port, fsync)


class WebhookReceiver:
    """A real HTTP server for webhook tests: answers POSTs with ``statuses`` in turn (then 204) and
    records each request's headers and body. An answer is a status, or (status, headers, body)."""

    def __init__(self, statuses=(), port: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.statuses, self.requests, self.arrived = list(statuses), [], threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((dict(self.headers), body))
                answer = receiver.statuses.pop(0) if receiver.statuses else 204
                status, headers, content = answer if isinstance(answer, tuple) else (answer, {}, b"")
                self.send_response(status)
                for name, value in {**headers, "content-length": str(len(content))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)
                receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/video"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
