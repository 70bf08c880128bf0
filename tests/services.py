"""Real services for the tests: redis-server, a moto S3 server, and our own processes.

Each starts on a free loopback port and is stopped (process group and all) when the test session
ends. Without redis-server on PATH the tests that need it skip — except under CI=true, where a
missing service is a failure (``.ci/run`` installs it).
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
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.command, self.log_path = command, log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                      cwd=cwd, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, not a shutdown."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def wait_until(predicate, timeout: float, what: str, process: Process | None = None, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{what}: process exited early\n{process.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}" + (f"\n{process.tail()}" if process else ""))


def start_redis(directory: Path, appendonly: bool = False, port: int | None = None) -> tuple[Process, str]:
    """A redis-server; ``appendonly``: durable (AOF, fsync on every write) so a restart on the same
    ``port`` and ``directory`` brings every key back."""
    binary = require_binary("redis-server")
    port = port or free_port()
    durability = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    process = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability,
                       "--dir", str(directory)], directory / f"redis-{time.monotonic_ns()}.log")
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis.Redis.from_url(url).ping(), 20, "redis-server", process)
    return process, url


def start_moto(directory: Path) -> tuple[Process, str]:
    port = free_port()
    process = Process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      directory / "moto.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/moto-api/").status_code < 500, 30, "moto S3 server", process)
    return process, url


def hsa_video_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hsa_video.cli", *args]


def service_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSA_")}
    env.update({f"HSA_{k.upper()}": v for k, v in settings.items()})
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WebhookReceiver:
    """A real HTTP server for webhook tests: answers POSTs with ``statuses`` in turn (then 204) and
    records each request's headers and body."""

    def __init__(self, statuses=()):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.statuses, self.requests, self.arrived = list(statuses), [], threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/video"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
