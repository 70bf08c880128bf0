"""Model runners: one loaded model behind ``card()`` and ``generate(spec, image, on_step)``.

A runner is created once per worker process (model weights stay in memory between jobs). The
built-in tiny model is the default; real Wan and LTX-2 checkpoints arrive as further runners.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import numpy as np

from server.jobs import JobSpec, ModelCard, ModelLimits
from server.sla import TimingModel

StepHook = Callable[[int, int], None]  # (steps done, total steps); may raise to abort
Replan = Callable[[int, float], float | None]  # (step, elapsed s) → budget for the remaining steps


class ModelRunner(Protocol):
    name: str

    def card(self) -> ModelCard: ...

    def generate(self, spec: JobSpec, image: np.ndarray | None, on_step: StepHook,
                 replan: Replan | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """A (F, H, W, 3) float clip in [0, 1] at ``spec``'s size and frames, and the sampler's figures."""

    def observe(self, steps: int, budget: float, denoise_seconds: float) -> None:
        """Refine the timing model with a finished job."""


class TinyRunner:
    """The built-in tiny Wan-architecture model (16 frames of 32×32, shown at integer upscales)."""

    name = "tiny"
    UPSCALES = (1, 2, 4, 8)

    def __init__(self, weights=None, device: str = "cpu", threads: int | None = None,
                 timing: TimingModel | None = None):
        import torch

        from hsa_core.tiny.model import WEIGHTS_DIR, TinyVideoModel

        if threads:
            torch.set_num_threads(threads)
        self.model = TinyVideoModel.load(weights or WEIGHTS_DIR).to(device)
        self.timing = timing or self._calibrate_timing()  # given: measured by a predecessor on this host
        self._card: ModelCard | None = None

    def _calibrate_timing(self) -> TimingModel:
        """Time the default schedule at budgets 1 and 0.5 (and one MP4) for the SLA planner."""
        import tempfile
        from pathlib import Path

        from hsa_core import EulerSampler, HSASampler
        from hsa_core.media import upscale, write_mp4

        steps = self.model.config.steps
        self.model.generate("a red circle", EulerSampler(), steps=2)  # warm-up
        start = time.perf_counter()
        clip, full = self.model.generate("a red circle", HSASampler(1.0), steps=steps)
        outside_sampler = time.perf_counter() - start - full.seconds  # text encoder + decode
        _, half = self.model.generate("a red circle", HSASampler(0.5), steps=steps)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            write_mp4(upscale(clip, 4), Path(folder) / "calibration.mp4")
            mp4_seconds = time.perf_counter() - start
        per_budget = max(0.0, (full.seconds - half.seconds) / (0.5 * steps))
        return TimingModel(step_seconds_fixed=max(0.0, full.seconds / steps - per_budget),
                           step_seconds_per_budget=per_budget,
                           job_seconds_fixed=round(outside_sampler + mp4_seconds + 0.05, 4))

    def observe(self, steps: int, budget: float, denoise_seconds: float) -> None:
        self.timing = self.timing.observe(steps, budget, denoise_seconds)

    def card(self) -> ModelCard:
        if self._card is None:
            self._card = self._static_card()
        full_step = self.timing.step_seconds_fixed + self.timing.step_seconds_per_budget
        return self._card.model_copy(update={"timing": self.timing,
                                             "seconds_per_step": round(self.timing.factor * full_step, 5)})

    def _static_card(self) -> ModelCard:
        from hsa_core import HSAConfig

        config = self.model.config
        grid = self.model.adapter.token_grid(config.latent_shape)
        frame_tokens = int(grid.frame_mask([0]).sum())  # held clean in I2V
        hsa = HSAConfig()
        max_steps = 100
        min_t2v = [1.0] + [hsa.min_budget(steps, grid.num_tokens) for steps in range(1, max_steps + 1)]
        min_i2v = [1.0] + [hsa.min_budget(steps, grid.num_tokens, frozen_tokens=frame_tokens)
                           for steps in range(1, max_steps + 1)]
        sizes = [f"{config.size * k}x{config.size * k}" for k in self.UPSCALES]
        return ModelCard(
            id=self.name,
            family="wan",
            description="built-in tiny Wan-architecture T2V/I2V model (synthetic moving shapes, 16 frames of "
                        f"{config.size}x{config.size}; larger sizes are nearest-neighbour upscales)",
            image_input="optional",
            limits=ModelLimits(sizes=sizes, num_frames=[config.frames], fps=8, max_steps=max_steps,
                               default_steps=config.steps, default_size=sizes[2],
                               guidance_scale=config.guidance_scale,
                               min_budget_t2v=min_t2v, min_budget_i2v=min_i2v),
        )

    def generate(self, spec: JobSpec, image: np.ndarray | None, on_step: StepHook,
                 replan: Replan | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        from hsa_core import HSASampler
        from hsa_core.media import upscale

        config = self.model.config
        factor = spec.width // config.size
        if spec.width != spec.height or factor not in self.UPSCALES or spec.num_frames != config.frames:
            raise ValueError(f"tiny model cannot produce {spec.num_frames} frames of {spec.width}x{spec.height}")
        clip, result = self.model.generate(
            spec.prompt, HSASampler(spec.budget, replan=replan), image=image, steps=spec.steps,
            guidance_scale=spec.guidance_scale, seed=spec.seed, negative_prompt=spec.negative_prompt,
            callback=lambda stats: on_step(stats.step + 1, spec.steps),
        )
        figures = {
            "budget": spec.budget,
            "achieved_compute_fraction": round(result.achieved_compute_fraction, 4),
            "denoise_seconds": round(result.seconds, 4),
            "replans": result.extra.get("replans", []),
            "predicted_compute_fraction": round(result.predicted_compute_fraction, 4),
            "token_fraction": round(result.token_fraction, 4),
            "kv_cache_bytes": result.kv_cache_bytes,
            "mean_velocity_drift": result.mean_velocity_drift,
            "token_steps_computed": sum(s.active_tokens for s in result.steps),
            "token_steps_total": result.num_tokens * len(result.steps),
            "unknown_words": self.model.tokenizer.unknown_words(spec.prompt),
        }
        return upscale(clip, factor), figures

    def image_size(self) -> int:
        return self.model.config.size


RUNNERS: dict[str, type] = {"tiny": TinyRunner}


def load_runner(name: str, **options) -> ModelRunner:
    if name not in RUNNERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[name](**options)
