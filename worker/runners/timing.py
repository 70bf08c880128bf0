"""Timing models that survive restarts: a short probe at a cold start, a cache on disk, jobs refine them.

A worker needs a service-time model per served shape before the gateway can plan deadlines against
it, and it must not spend minutes measuring whole generations at every start: a newcomer is not
listed (its model answers 404) until it has one. So:

* the cache: one JSON file per (model, hardware, dtype, shape) under the data directory, written
  atomically, shared by every worker of the host and by the replacement of a crashed process;
* a cold start probes each uncached shape: a warm-up forward, then forwards with every token and
  with half of them (``hsa_core.cost_model.calibrate``) give the per-step cost and how it scales with
  the budget; one text encoding, one VAE decode and one MP4 encode give the time outside denoising;
* every finished job refines its shape's model (``TimingModel.observe``) and writes it back.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from jobs.sla import TimingModel

PROBE_FRACTIONS = (1.0, 0.5)  # every token, and half: two points of the cost line


class TimingCache:
    """Timing models of one model on one kind of hardware, one file per shape."""

    def __init__(self, directory: Path, model: str, hardware: str):
        self.directory = Path(directory)
        self.prefix = _file_safe(f"{model}-{hardware}")

    def _path(self, shape: str) -> Path:
        return self.directory / f"{self.prefix}-{_file_safe(shape)}.json"

    def load(self, shape: str) -> TimingModel | None:
        try:
            return TimingModel.model_validate_json(self._path(shape).read_text())
        except (OSError, ValueError):  # absent, or half-written by a process killed before the rename
            return None

    def save(self, shape: str, timing: TimingModel) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # a unique temporary file renamed over the old one: readers never see a partial write
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            file.write(timing.model_dump_json())
        os.replace(temporary, self._path(shape))


def hardware_name(device, dtype, threads: int | None = None) -> str:
    """What a timing depends on besides the model and the shape: the device (GPU model, or CPU model and
    threads) and the compute dtype."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_model()}-{threads or torch.get_num_threads()}t"
    return f"{name}-{str(dtype).removeprefix('torch.')}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def probe_repeats(seconds_per_forward: float) -> int:
    """Forwards per probe point: enough to average over ~0.3 s of timer noise, never more than 5."""
    return max(1, min(5, round(0.3 / max(seconds_per_forward, 1e-6))))


def timing_from_probe(cost_model, tokens: int, branches: int, fixed_seconds: float) -> TimingModel:
    """A shape's TimingModel from a fitted per-forward ``CostModel``: a step computes every guidance
    branch; its cost at budget b is the overhead plus b × the cost of all tokens."""
    full = branches * cost_model.step_seconds(tokens, tokens)
    fixed_per_step = branches * cost_model.overhead
    return TimingModel(step_seconds_fixed=round(fixed_per_step, 6),
                       step_seconds_per_budget=round(max(0.0, full - fixed_per_step), 6),
                       job_seconds_fixed=round(fixed_seconds, 4))


def time_mp4(frames, fps: int, audio=None, sample_rate: int | None = None) -> float:
    """Seconds to encode ``frames`` (and a soundtrack) as the pipeline does."""
    from hsa_core.media import write_mp4

    with tempfile.TemporaryDirectory(prefix="hsa-probe-") as folder:
        start = time.perf_counter()
        write_mp4(frames, Path(folder) / "probe.mp4", fps=fps, audio=audio, sample_rate=sample_rate)
        return time.perf_counter() - start


def describe(timings: dict[str, TimingModel]) -> str:
    return json.dumps({shape: {"seconds_per_step": round(t.step_seconds_fixed + t.step_seconds_per_budget, 4),
                               "fixed_seconds": t.job_seconds_fixed} for shape, t in timings.items()})
