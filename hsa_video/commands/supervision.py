"""Restarting the server's child processes: the embedded worker here, the gateway processes in
``gateway_pool`` — both with the same backoff."""

from __future__ import annotations

import logging
import subprocess
import threading

log = logging.getLogger("hsa.serve")

RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)
CONFIGURATION_ERROR = 2  # hsa-video's exit code for a setting, a model directory or a request it refuses


class WorkerSupervisor:
    """Keeps the embedded worker running: restarts it with backoff if it dies."""

    def __init__(self, command: list[str]):
        self.command = command
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> "WorkerSupervisor":
        self.process = subprocess.Popen(self.command)
        self._thread.start()
        return self

    def _watch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            code = self.process.wait()
            if self._stop.is_set():
                return
            if code == CONFIGURATION_ERROR:  # it said why on its way out; restarting cannot help
                log.error("embedded worker cannot start (exit code %s, see its error above); not restarting", code)
                return
            delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error("embedded worker exited with code %s; restarting in %s s", code, delay)
            if self._stop.wait(delay):
                return
            failures += 1
            self.process = subprocess.Popen(self.command)

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
