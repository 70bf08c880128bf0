"""``hsa-video serve --workers N``: N gateway processes, each accepting on its own listening socket.

uvicorn's own ``--workers`` shares one socket among its processes, and whichever process wakes first
accepts every connection waiting: keep-alive clients that connect together (a proxy's pool, a load
generator) land mostly on one process, one core busy while another idles, and the busy one's queue
becomes the gateway's p99. With ``SO_REUSEPORT`` every process has its own socket on the same
port and Linux spreads new connections over them by a hash of each connection's addresses (other
kernels may not balance a reuse-port group: the server's target is Linux containers).

The sockets are bound here, in the supervisor, so a port in use fails at once, and each is handed
to its process; a process that dies is restarted on the same socket (connections the kernel put in
its backlog meanwhile wait for it rather than being reset).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time

from .supervision import RESTART_BACKOFF_SECONDS

log = logging.getLogger("hsa.serve")

HEALTHY_SECONDS = 60  # a process that ran this long before dying is restarted without backoff
STOP_TIMEOUT_SECONDS = 30


def bind_reuse_port(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port`` in one ``SO_REUSEPORT`` group (port 0: one free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _serve(sock: socket.socket, log_level: str, access_log: bool) -> None:
    """One gateway process: its own app (and clients) from the HSA_* settings, on its own socket."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config("server.app:build_app", factory=True, log_level=log_level, access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


class GatewayPool:
    def __init__(self, host: str, port: int, processes: int, log_level: str = "info", access_log: bool = True):
        self.sockets = bind_reuse_port(host, port, processes)
        self.log_level, self.access_log = log_level, access_log
        self._context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited loop or clients
        self._processes: list[multiprocessing.Process | None] = [None] * processes
        self._started_at = [0.0] * processes
        self._stop = threading.Event()

    def _start(self, index: int) -> None:
        process = self._context.Process(target=_serve, args=(self.sockets[index], self.log_level, self.access_log),
                                        name=f"gateway-{index}")
        process.start()
        self._processes[index], self._started_at[index] = process, time.monotonic()
        log.info("gateway process %d started [%d]", index, process.pid)

    def run(self) -> None:
        """Start every process, restart any that dies (with backoff), stop all on SIGTERM or SIGINT."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        for index in range(len(self.sockets)):
            self._start(index)
        failures = [0] * len(self.sockets)
        try:
            while not self._stop.wait(0.5):
                for index, process in enumerate(self._processes):
                    if process.is_alive():
                        continue
                    if time.monotonic() - self._started_at[index] >= HEALTHY_SECONDS:
                        failures[index] = 0
                    delay = RESTART_BACKOFF_SECONDS[min(failures[index], len(RESTART_BACKOFF_SECONDS) - 1)]
                    log.error("gateway process %d [%d] exited with code %s; restarting in %s s",
                              index, process.pid, process.exitcode, delay)
                    if self._stop.wait(delay):
                        break
                    failures[index] += 1
                    self._start(index)
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM to every process (uvicorn finishes the requests in flight), SIGKILL past the timeout."""
        live = [process for process in self._processes if process is not None and process.is_alive()]
        for process in live:
            process.terminate()
        for process in live:
            process.join(STOP_TIMEOUT_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        for sock in self.sockets:
            sock.close()
