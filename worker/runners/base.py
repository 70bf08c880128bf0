"""What every model runner offers the job pipeline: a card, a generation, a timing model per shape."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from jobs.records import JobSpec, ModelCard, shape_key
from jobs.sla import TimingModel

StepHook = Callable[[int, int], None]  # (steps done, total steps); may raise to abort
Replan = Callable[[int, float], float | None]  # (step, elapsed s) → budget for the remaining steps


@dataclass(frozen=True)
class InputImages:
    """A job's conditioning frames as RGB PIL images: the first (I2V) and the last (first-last-frame)."""

    first: Any = None
    last: Any = None

    @classmethod
    def from_storage(cls, storage, spec: JobSpec) -> "InputImages":
        """The job's frames from storage (the gateway stored them as PNG)."""
        from PIL import Image

        def load(key: str | None):
            if key is None:
                return None
            with Image.open(io.BytesIO(storage.get_bytes(key))) as image:
                return image.convert("RGB")

        return cls(first=load(spec.input_key), last=load(spec.last_frame_key))


@dataclass
class GeneratedClip:
    """A finished generation, ready to encode."""

    frames: np.ndarray  # (F, H, W, 3) float in [0, 1], at the job's size and frame count
    fps: int
    figures: dict[str, Any]  # the sampler's figures: budget, achieved compute fraction, timings, …
    audio: np.ndarray | None = None  # (channels, samples) in [−1, 1]: a soundtrack to mux in
    sample_rate: int | None = None
    denoise_seconds: float = 0.0  # the sampler's own wall time, the part of the job the budget scales


class DecodeFailed(Exception):
    """Every decoding attempt failed; the sampled latents (``torch.save`` bytes) are kept by the caller."""

    code = "decode_failed"

    def __init__(self, message: str, latents: bytes):
        super().__init__(message)
        self.latents = latents


class ModelRunner(Protocol):
    """One loaded model in a worker process: it stays in memory between jobs, one job at a time."""

    name: str

    def card(self) -> ModelCard:
        """What this worker serves, as the gateway validates and plans against it."""

    def timing_for(self, spec: JobSpec) -> TimingModel | None:
        """The service-time model of the job's shape (None: no SLA planning)."""

    def generate(self, spec: JobSpec, budget: float, images: InputImages, on_step: StepHook,
                 replan: Replan | None = None) -> GeneratedClip:
        """The clip of ``spec`` at its size and frames and at ``budget`` (the job's plan); ``on_step`` after
        every denoising step, ``replan`` at HSA's re-allocation points."""

    def observe(self, spec: JobSpec, clip: GeneratedClip, fixed_seconds: float) -> None:
        """Refine the shape's timing model with a finished job (``fixed_seconds``: its time outside denoising)."""


class TimedShapes:
    """The timing models of a runner's shapes, refined by finished jobs and written to the timing cache."""

    def __init__(self, timings: dict[str, TimingModel], cache=None):
        self.timings, self.cache = timings, cache

    def get(self, spec: JobSpec) -> TimingModel | None:
        return self.timings.get(shape_key(spec.width, spec.height, spec.num_frames))

    def observe(self, spec: JobSpec, clip: GeneratedClip, fixed_seconds: float) -> None:
        key = shape_key(spec.width, spec.height, spec.num_frames)
        timing, fraction = self.timings.get(key), clip.figures.get("achieved_compute_fraction")
        if timing is None or fraction is None or clip.denoise_seconds <= 0:
            return
        self.timings[key] = timing.observe(spec.steps, fraction, clip.denoise_seconds, fixed_seconds)
        if self.cache is not None:
            self.cache.save(key, self.timings[key])


def sampler_figures(budget: float, result) -> dict[str, Any]:
    """What a sampler's result (``hsa_core.SampleResult``) tells the job record and the metrics."""
    return {
        "budget": budget,
        "achieved_compute_fraction": round(result.achieved_compute_fraction, 4),
        "denoise_seconds": round(result.seconds, 4),
        "replans": _replans(result),
        "predicted_compute_fraction": round(result.predicted_compute_fraction, 4),
        "token_fraction": round(result.token_fraction, 4),
        "kv_cache_bytes": result.kv_cache_bytes,
        "mean_velocity_drift": result.mean_velocity_drift,
        "token_steps_computed": sum(s.active_tokens for s in result.steps),
        "token_steps_total": result.num_tokens * len(result.steps),
    }


def _replans(result) -> list:
    """Budget changes of a deadline-driven job, from every expert's run for a two-expert model."""
    if "experts" in result.extra:
        return [replan for expert in result.extra["experts"] for replan in expert.get("replans", [])]
    return result.extra.get("replans", [])
