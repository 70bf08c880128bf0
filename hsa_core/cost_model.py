"""Predicted cost of a denoising step, and the budget ↔ token-evaluation mapping built on it.

One forward of one CFG branch with a of N tokens active costs

    seconds(a, N) = overhead + a · (per_token + per_pair · N)

``per_token`` covers the parts linear in the active tokens (Q/K/V/out projections, cross-attention,
FFN, modulation); ``per_pair`` the self-attention of a queries against all N keys; ``overhead`` what
does not shrink with a (launches, the time embedding, the Euler update, Python). The defaults come
from FLOP counts at a nominal throughput, which makes cost proportional to token count; calibrating
on the running hardware (``calibrate``) measures the three coefficients instead.

A budget b asks for b × the cost of the full sampler (every token at every step). With the cost
model that becomes an exact number of token evaluations:
Σᵢ (overhead + s·aᵢ) = b·T·(overhead + s·N)  ⇒  Σᵢ aᵢ = b·T·N − (1 − b)·T·overhead / s,  s = per_token + per_pair·N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import ConfigError

NOMINAL_FLOPS_PER_SECOND = 1e12


@dataclass(frozen=True)
class CostModel:
    overhead: float = 0.0  # seconds per step that do not depend on the active tokens
    per_token: float = 1e-9  # seconds per active token
    per_pair: float = 0.0  # seconds per (active query, key) pair

    def __post_init__(self) -> None:
        if min(self.overhead, self.per_token, self.per_pair) < 0 or self.per_token + self.per_pair <= 0:
            raise ConfigError(f"cost coefficients must be ≥ 0 with a positive per-token cost, got {self}")

    @classmethod
    def from_architecture(cls, num_layers: int, width: int, ffn_dim: int | None = None, text_tokens: int = 512):
        """FLOP-proportional defaults for a Wan-style block (self-attn, text cross-attn, FFN)."""
        ffn_dim = ffn_dim or 4 * width
        # Multiply-accumulates per active token per layer: QKV+out 4d², cross Q+out 2d² and
        # attention over the text L·2d, FFN 2·d·ffn; self-attention adds 2·d per key (QKᵀ and AV).
        per_token_macs = 6 * width**2 + 2 * text_tokens * width + 2 * width * ffn_dim
        per_pair_macs = 2 * width
        scale = 2 * num_layers / NOMINAL_FLOPS_PER_SECOND
        return cls(overhead=0.0, per_token=per_token_macs * scale, per_pair=per_pair_macs * scale)

    def token_cost(self, num_tokens: int) -> float:
        """Seconds per active token when every query sees ``num_tokens`` keys."""
        return self.per_token + self.per_pair * num_tokens

    def step_seconds(self, active: int | float, num_tokens: int) -> float:
        return self.overhead + active * self.token_cost(num_tokens)

    def predict_seconds(self, active_counts: Sequence[int | float], num_tokens: int, branches: int = 1) -> float:
        """Wall time of a sampling run that computes ``active_counts[i]`` tokens at step i."""
        return branches * sum(self.step_seconds(a, num_tokens) for a in active_counts)

    def compute_fraction(self, active_counts: Sequence[int | float], num_tokens: int) -> float:
        """Cost of the run relative to computing every token at every step."""
        full = len(active_counts) * self.step_seconds(num_tokens, num_tokens)
        return sum(self.step_seconds(a, num_tokens) for a in active_counts) / full

    def token_evaluations(self, budget: float, steps: int, num_tokens: int) -> float:
        """Σᵢ aᵢ that makes the run cost ``budget`` × the full run."""
        return budget * steps * num_tokens - (1 - budget) * steps * self.overhead / self.token_cost(num_tokens)

    def budget_for(self, token_evaluations: float, steps: int, num_tokens: int) -> float:
        """Inverse of ``token_evaluations``."""
        full = steps * self.step_seconds(num_tokens, num_tokens)
        return (steps * self.overhead + token_evaluations * self.token_cost(num_tokens)) / full

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, int, float]]) -> "CostModel":
        """Least-squares fit from (active, num_tokens, seconds) measurements.

        With one distinct N the per-token and per-pair terms cannot be told apart, so the fitted
        slope is reported entirely as ``per_token`` for that N. Coefficients are kept ≥ 0.
        """
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise ConfigError("calibration needs at least two (active, num_tokens, seconds) samples")
        active, tokens, seconds = data.T
        if len(np.unique(active)) < 2:
            raise ConfigError("calibration needs at least two distinct active-token counts")
        columns = [np.ones_like(active), active]
        if len(np.unique(tokens)) > 1:
            columns.append(active * tokens)
        coefficients = _nonnegative_least_squares(np.stack(columns, axis=1), seconds)
        overhead, per_token = coefficients[0], coefficients[1]
        per_pair = coefficients[2] if len(coefficients) > 2 else 0.0
        if per_token + per_pair <= 0:
            raise ConfigError("calibration measured no cost that grows with the active tokens")
        return cls(overhead=float(overhead), per_token=float(per_token), per_pair=float(per_pair))


def _nonnegative_least_squares(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares with coefficients clamped at 0 by refitting without the negative ones."""
    keep = np.ones(features.shape[1], dtype=bool)
    while True:
        solution = np.zeros(features.shape[1])
        solution[keep] = np.linalg.lstsq(features[:, keep], target, rcond=None)[0]
        negative = keep & (solution < 0)
        if not negative.any():
            return solution
        keep &= ~negative


@torch.inference_mode()
def calibrate(
    adapter,
    grid,
    branch,
    active_fractions: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
    repeats: int = 3,
    sigma: float = 0.5,
    seed: int = 0,
) -> CostModel:
    """Time token-subset forwards of ``adapter`` on this hardware and fit a CostModel.

    Each fraction is timed ``repeats`` times after one warm-up forward; the median is used. When
    noise hides any growth with the active tokens, the result is the proportional model. The inputs
    live on the adapter's device, and the clock waits for that device's queued work.
    """
    from .samplers.base import Stopwatch  # imported here: the samplers package imports this module

    device = torch.device(getattr(adapter, "device", torch.device("cpu")))
    clock = Stopwatch(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n = grid.num_tokens
    x = torch.randn(grid.batch, n, grid.token_dim, generator=generator, device=device)
    sigmas = torch.full((grid.batch,), sigma, device=device)
    cache = adapter.new_kv_cache(grid)
    adapter.velocity(x, sigmas, branch, active=None, kv_cache=cache)  # fills the cache, warms up kernels
    # tokens every subset holds (LTX-2's audio: computed at every step), and the ones drawn at random
    pinned = grid.always_active.to(device) if grid.always_active is not None else torch.zeros(n, dtype=torch.bool,
                                                                                                device=device)
    drawable = (~pinned).nonzero().squeeze(1)
    samples = []
    for fraction in active_fractions:
        count = max(1, round(fraction * n))
        drawn = drawable[torch.randperm(drawable.numel(), generator=generator, device=device)]
        active = torch.cat([pinned.nonzero().squeeze(1), drawn[:max(0, count - int(pinned.sum()))]]).sort().values
        count = active.numel()
        if count == n:
            active = None
        times = []
        for _ in range(repeats):
            start = clock.now()
            subset = x if active is None else x[:, active]
            adapter.velocity(subset, sigmas, branch, active=active, kv_cache=cache)
            times.append(clock.now() - start)
        samples.append((count, n, float(np.median(times))))
    try:
        return CostModel.fit(samples)
    except ConfigError:
        # Timing noise swamped the slope (tiny workloads): fall back to cost proportional to tokens,
        # scaled so a full forward costs what it measured.
        full = max(seconds for count, _, seconds in samples if count == max(c for c, _, _ in samples))
        return CostModel(per_token=max(full, 1e-9) / n)
