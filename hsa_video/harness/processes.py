"""Real services as child processes: redis-server, a moto S3 server
and our own ``hsa-video`` commands, each on a free loopback port, in its own process group (stopped
or killed with all its children), with its output in a log file.
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


def find_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install -y {name})")
    return path


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, name: str | None = None):
        self.command, self.log_path = command, Path(log_path)
        self.name = name or Path(command[0]).name
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
    """``predicate()``'s first truthy value; exceptions count as "not yet". Fails early if ``process``
    exits, and on timeout, with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{what}: {process.name} exited early\n{process.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" +
                       (f"\n{process.tail()}" if process is not None else ""))


def start_redis(directory: Path, appendonly: bool = False, port: int | None = None,
                fsync: str = "always", password: str | None = None) -> tuple[Process, str]:
    """A redis-server and its URL; ``appendonly``: durable (AOF) so a restart on the same ``port`` and
    ``directory`` brings every key back, fsynced on every write (``fsync="always"``) or once a second
    (``"everysec"``, as docker-compose.yml runs it); ``password``: required of every client, and in the URL."""
    binary = find_binary("redis-server")
    port = port or free_port()
    durability = ["--appendonly", "yes", "--appendfsync", fsync] if appendonly else ["--appendonly", "no"]
    auth = ["--requirepass", password] if password else []
    process = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability, *auth,
                       "--dir", str(directory)], Path(directory) / f"redis-{time.monotonic_ns()}.log")
    import redis

    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis.Redis.from_url(url).ping(), 20, "redis-server", process)
    return process, url


def start_moto(directory: Path) -> tuple[Process, str]:
    """A moto S3 server (a real S3 HTTP endpoint) and its URL."""
    port = free_port()
    process = Process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      Path(directory) / "moto.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/moto-api/").status_code < 500, 30, "moto S3 server", process)
    return process, url


def hsa_video_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hsa_video.cli", *args]


def service_env(omp_threads: int = 1, **settings: str) -> dict[str, str]:
    """This environment without its ``HSA_*`` variables, plus ``settings`` as ``HSA_<NAME>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSA_")}
    env.update({f"HSA_{k.upper()}": v for k, v in settings.items()})
    env["OMP_NUM_THREADS"] = str(omp_threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env
