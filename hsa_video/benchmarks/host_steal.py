"""CPU steal: time the hypervisor gave this virtual machine's runnable vCPUs to someone else.

On a shared host a load test's tail latency can be the host's, not the server's: while a vCPU is
stolen, every process on it stands still. Linux counts steal in ``/proc/stat`` (the 8th column of
the ``cpu`` line, in clock ticks). ``StealSampler`` reads it every ``interval`` seconds on the load
generator's event loop (one small file read) and keeps one window per read, so a request's latency
can be set beside the steal during it.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def read_cpu_ticks() -> tuple[int, int] | None:
    """The machine's cumulative (steal, total) clock ticks over all CPUs; None where there is no
    ``/proc/stat`` (not Linux)."""
    try:
        with PROC_STAT.open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    ticks = [int(value) for value in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


@dataclass
class StealSampler:
    interval: float = 0.1
    # window i spans [ends[i-1], ends[i]] on time.perf_counter()'s clock (the generator's schedule clock)
    ends: list[float] = field(default_factory=list)
    steal_ticks: list[int] = field(default_factory=list)
    total_ticks: list[int] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return bool(self.ends)

    async def run(self) -> None:
        """Sample until cancelled."""
        last = read_cpu_ticks()
        if last is None:
            return
        self.ends.append(time.perf_counter())
        self.steal_ticks.append(0)
        self.total_ticks.append(0)
        while True:
            await asyncio.sleep(self.interval)
            now = read_cpu_ticks()
            self.ends.append(time.perf_counter())
            self.steal_ticks.append(now[0] - last[0])
            self.total_ticks.append(now[1] - last[1])
            last = now

    def steal_percent(self, start: float, end: float) -> float | None:
        """Stolen share of the machine's CPU time in the windows that overlap [start, end]."""
        windows = self._overlapping(start, end)
        total = sum(self.total_ticks[i] for i in windows)
        return round(100 * sum(self.steal_ticks[i] for i in windows) / total, 2) if total else None

    def stolen_during(self, start: float, end: float) -> bool:
        """Whether any window overlapping [start, end] saw steal (a request running then may have stood
        still for it). Windows are ``interval`` long: this marks whole windows, not exact instants."""
        return any(self.steal_ticks[i] for i in self._overlapping(start, end))

    def _overlapping(self, start: float, end: float) -> range:
        # window i (i ≥ 1) is (ends[i-1], ends[i]]; the last one open until the next read
        first = max(1, bisect_left(self.ends, start))
        last = min(len(self.ends) - 1, bisect_left(self.ends, end))
        return range(first, last + 1)
