"""``hsa-video serve --workers N``: each gateway process on its own SO_REUSEPORT socket, connections
spread over them, a dead process restarted, all stopped by one SIGTERM (real processes, real Redis)."""

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from hsa_video.commands.gateway_pool import bind_reuse_port
from tests.services import Process, free_port, hsa_video_command, service_env, wait_until

CONNECTIONS = 64


def test_the_sockets_hold_one_port_for_the_group():
    sockets = bind_reuse_port("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        with socket.socket() as outsider, pytest.raises(OSError):  # no SO_REUSEPORT: not one of the group
            outsider.bind(("127.0.0.1", ports.pop()))
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_fails_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            bind_reuse_port("127.0.0.1", taken.getsockname()[1], 2)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets whose local port is ``port``, in ``state`` (/proc/net/tcp's hex code)."""
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return {row[9] for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == state}


def _socket_inodes(pid: int) -> set[str]:
    held = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(target[8:-1])
    except OSError:  # gone meanwhile
        pass
    return held


def established_on(pid: int, port: int) -> int:
    """Connections accepted on ``port`` that ``pid`` holds."""
    return len(_socket_inodes(pid) & _inodes(port, "01"))  # ESTABLISHED


def serving_processes(pid: int, port: int) -> list[int]:
    """The gateway processes: the supervisor's children that listen on ``port`` (not multiprocessing's helper)."""
    listening = _inodes(port, "0A")  # LISTEN
    return [child for child in children(pid) if _socket_inodes(child) & listening]


def test_connections_spread_over_the_processes_and_a_dead_one_comes_back(redis_url, tmp_path):
    port = free_port()
    gateway = Process(hsa_video_command("serve", "--port", str(port), "--workers", "2", "--no-access-log"),
                      tmp_path / "gateway.log", env=service_env(redis_url=redis_url, data_dir=str(tmp_path / "data")))
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, 60, "gateway processes", gateway)
        processes = wait_until(lambda: len(found := serving_processes(gateway.popen.pid, port)) == 2 and found, 30,
                               "two gateway processes", gateway)

        # keep-alive clients connecting together, as a proxy's pool does: none of them idle
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        shares = [established_on(pid, port) for pid in processes]
        assert sum(shares) == CONNECTIONS
        # the kernel hashes each connection to a socket: binomial(64, 1/2) leaves one side under 16 once in 25 000
        assert min(shares) >= 16, shares
        for client in clients:
            client.close()

        os.kill(processes[0], signal.SIGKILL)
        replaced = wait_until(lambda: len(found := serving_processes(gateway.popen.pid, port)) == 2
                              and processes[0] not in found and found, 60, "a restarted gateway process", gateway)
        assert processes[1] in replaced
        for _ in range(20):  # every connection is answered, whichever process it lands on
            assert httpx.get(url, timeout=5).status_code == 200

        gateway.popen.send_signal(signal.SIGTERM)  # the supervisor alone: it stops its processes
        assert gateway.popen.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)
    finally:
        gateway.stop()
    assert "exited with code -9; restarting" in gateway.tail(200)
