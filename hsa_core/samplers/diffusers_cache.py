"""diffusers' own step-caching hooks as samplers: FirstBlockCache, TaylorSeer, MagCache.

These are the maintained implementations (``diffusers.hooks``), applied to the Wan transformer the
adapter wraps with ``transformer.enable_cache(config)`` and removed afterwards. The loop is plain
Euler; each guidance branch runs inside its own ``cache_context`` so the hooks keep separate state per
branch, as diffusers' pipelines do. Methods:

- ``first_block_cache`` (ParaAttention's First Block Cache, TeaCache's successor in diffusers):
  when the first block's residual changed less than ``threshold``, the other blocks are skipped.
- ``taylorseer`` (Liu et al., arXiv 2503.06923): full passes every ``cache_interval`` steps, Taylor
  extrapolation of module outputs in between.
- ``mag_cache`` (Ma et al., MagCache): skips while the accumulated magnitude-ratio error stays
  below ``threshold``; needs per-model ``mag_ratios`` from a calibration run (``calibrate_mag_ratios``).

The fraction of self-attention layer calls made (``layer_fraction``) is the compute measure.

TaylorSeer runs every guidance branch in one batched forward (``GuidedDenoiser``'s batched guidance)
inside one cache context: its forecasts are element-wise and its compute steps follow the step count, so
stacking the branches changes nothing but the number of model calls. FirstBlockCache and MagCache decide
whether to skip from a norm over the whole hidden state, which over a stacked batch would be one decision
for both branches; they keep one forward and one context per branch, as diffusers' Wan pipelines run them.
"""

from __future__ import annotations

import logging
import re

import torch

from ..errors import ConfigError
from .base import GuidedDenoiser, SampleResult, StepStats, Stopwatch, sigma_input, validate_inputs

METHODS = ("first_block_cache", "taylorseer", "mag_cache")


def _cache_config(method: str, steps: int, params: dict):
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if method == "first_block_cache":
        return FirstBlockCacheConfig(threshold=params.get("threshold", 0.05))
    if method == "taylorseer":
        # diffusers' default patterns expect modules named "...attn"; Wan's are attn1 / attn2 / ffn
        return TaylorSeerCacheConfig(cache_interval=int(params.get("cache_interval", 5)),
                                     disable_cache_before_step=int(params.get("disable_cache_before_step", 3)),
                                     max_order=int(params.get("max_order", 1)), taylor_factors_dtype=torch.float32,
                                     cache_identifiers=[r"blocks\.\d+\.(attn1|attn2|ffn)"])
    if method == "mag_cache":
        if params.get("calibrate"):
            return MagCacheConfig(calibrate=True, num_inference_steps=steps)
        return MagCacheConfig(threshold=params.get("threshold", 0.06), max_skip_steps=int(params.get("max_skip_steps", 3)),
                              retention_ratio=params.get("retention_ratio", 0.2), num_inference_steps=steps,
                              mag_ratios=params["mag_ratios"])
    raise ConfigError(f"unknown diffusers cache method {method!r}; known: {', '.join(METHODS)}")


class DiffusersCacheSampler:
    def __init__(self, method: str, **params):
        if method not in METHODS:
            raise ConfigError(f"unknown diffusers cache method {method!r}; known: {', '.join(METHODS)}")
        if method == "mag_cache" and not params.get("calibrate") and params.get("mag_ratios") is None:
            raise ConfigError("mag_cache needs mag_ratios (see calibrate_mag_ratios)")
        self.method, self.params = method, params
        self.name = method

    @torch.inference_mode()
    def sample(self, adapter, x, grid, conditioning, schedule, frozen=None, callback=None) -> SampleResult:
        validate_inputs(x, grid, frozen)
        transformer = adapter.transformer
        steps = schedule.steps
        denoiser = GuidedDenoiser(adapter, grid, conditioning, batch_branches=self.method == "taylorseer")
        forwards_per_step = 1 if denoiser.stacked is not None else denoiser.num_branches
        sigmas = schedule.sigmas.tolist()
        clock = Stopwatch(x.device)
        x = x.to(torch.float32).clone()
        initial = x.clone()
        stats: list[StepStats] = []
        transformer.enable_cache(_cache_config(self.method, steps, self.params))
        calls_before = adapter.self_attention_calls
        try:
            start = clock.now()
            for i in range(steps):
                step_start = clock.now()
                sigma = sigma_input(sigmas[i], grid.batch, frozen).to(x.device)
                if denoiser.stacked is not None:
                    with transformer.cache_context("branches"):  # one state over the stacked branches
                        outputs = denoiser.velocities(x, sigma)
                else:
                    outputs = []
                    for b, branch in enumerate(denoiser.branches):
                        with transformer.cache_context(f"branch {b}"):  # the hooks' state, one per guidance branch
                            outputs.append(adapter.velocity(x, sigma, branch).float())
                velocity = denoiser.guide(x, sigma, outputs)
                if frozen is not None:
                    velocity[:, frozen] = 0
                x.add_(velocity, alpha=sigmas[i + 1] - sigmas[i])
                stats.append(StepStats(i, sigmas[i], grid.num_tokens, 0, None, clock.now() - step_start))
                if callback is not None:
                    callback(stats[-1])
            seconds = clock.now() - start
        finally:
            transformer.disable_cache()
        if frozen is not None:
            x[:, frozen] = initial[:, frozen]
        layer_fraction = (adapter.self_attention_calls - calls_before) / (steps * len(transformer.blocks) * forwards_per_step)
        return SampleResult(tokens=x, steps=stats, num_tokens=grid.num_tokens, token_fraction=layer_fraction,
                            predicted_compute_fraction=layer_fraction, achieved_compute_fraction=layer_fraction,
                            predicted_seconds=None, seconds=seconds,
                            extra={"method": self.method, "layer_fraction": layer_fraction, **{
                                k: v for k, v in self.params.items() if k != "mag_ratios"}})


class _CaptureRatios(logging.Handler):
    def __init__(self):
        super().__init__()
        self.ratios: list[list[float]] = []

    def emit(self, record):
        match = re.search(r"MagCache Calibration Results: \[(.*)\]", record.getMessage())
        if match:
            self.ratios.append([float(v) for v in match.group(1).replace("tensor(", "").replace(")", "").split(",") if v.strip()])


def calibrate_mag_ratios(adapter, x, grid, conditioning, schedule, frozen=None) -> list[float]:
    """MagCache's per-step magnitude ratios for this model and schedule (diffusers' calibration mode)."""
    import contextlib
    import io

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler = _CaptureRatios()
    level = logger.level
    library_handlers = logging.getLogger("diffusers").handlers
    handler_levels = [h.level for h in library_handlers]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for library_handler in library_handlers:  # keep diffusers' own console output quiet meanwhile
        library_handler.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # diffusers also prints the ratios
            DiffusersCacheSampler("mag_cache", calibrate=True).sample(adapter, x, grid, conditioning, schedule, frozen)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        for library_handler, old in zip(library_handlers, handler_levels):
            library_handler.setLevel(old)
    if not handler.ratios:
        raise RuntimeError("MagCache calibration reported no ratios")
    return handler.ratios[0]  # the conditional branch's
