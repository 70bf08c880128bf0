"""``StealSampler``: which requests ran while the host took CPU time, and how much it took."""

import asyncio
import sys

import pytest

from hsa_video.benchmarks.host_steal import StealSampler, read_cpu_ticks


def sampler(ends, steal, total):
    return StealSampler(ends=list(ends), steal_ticks=list(steal), total_ticks=list(total))


def test_a_span_is_stolen_when_a_window_it_overlaps_saw_steal():
    # windows (0, 1], (1, 2], (2, 3]; steal only in the second
    windows = sampler([0.0, 1.0, 2.0, 3.0], [0, 0, 5, 0], [0, 100, 100, 100])
    assert not windows.stolen_during(0.2, 0.9)
    assert windows.stolen_during(0.9, 1.1)  # reaches into the stolen window
    assert windows.stolen_during(1.5, 1.6)
    assert not windows.stolen_during(2.1, 2.9)
    assert not windows.stolen_during(3.5, 3.6)  # after the last read: nothing known, nothing marked


def test_steal_percent_is_the_stolen_share_of_the_overlapping_windows():
    windows = sampler([0.0, 1.0, 2.0, 3.0], [0, 0, 5, 15], [0, 100, 100, 100])
    assert windows.steal_percent(0.5, 0.6) == 0.0
    assert windows.steal_percent(0.5, 2.5) == pytest.approx(100 * 20 / 300, abs=0.01)
    assert windows.steal_percent(1.5, 2.5) == pytest.approx(10.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_the_sampler_reads_proc_stat_until_cancelled():
    steal, total = read_cpu_ticks()
    assert 0 <= steal <= total

    async def sample():
        windows = StealSampler(interval=0.01)
        task = asyncio.create_task(windows.run())
        await asyncio.sleep(0.1)
        task.cancel()
        return windows

    windows = asyncio.run(sample())
    assert windows.available and len(windows.ends) >= 3
    assert windows.ends == sorted(windows.ends) and all(0 <= s <= t for s, t in zip(windows.steal_ticks,
                                                                                    windows.total_ticks))
