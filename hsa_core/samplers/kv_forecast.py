"""Forecast K/V for skipped tokens: the K/V-cache analogue of HSA's extrapolated velocity.

An active token attends to every token's cached keys and values; a skipped token's rows were computed
at its last evaluation k, from a latent that has moved since. ``ForecastKVCache`` keeps, per layer, the
rows of the evaluation before (p) as well, and hands attention the line through the two read at the
step's σ, with the same reach as the token's velocity:

    K̂ₙ = Kₙ(k) + τₙ·(Kₙ(k) − Kₙ(p)),   V̂ₙ likewise,   τₙ = min(limit, (σ_k − σᵢ)/(σ_p − σ_k))

τₙ = 0 for tokens computed at this step (their rows are fresh) and for tokens with one evaluation.
The price is a second cache for the layers it forecasts: k of L layers cost k/L of the cache more, all
of them double HSA's K/V memory (for Wan 2.1 14B at 480p / 81 frames in bf16, 27 GB more per branch).
It is an option (``HSAConfig.kv_forecast_layers``: the first k layers), off by default: where the
cache already decides which sizes fit on a GPU, doubling it is the operator's call.
"""

from __future__ import annotations

import torch

from ..kv_cache import TokenKVCache, is_float8


class ForecastKVCache:
    """A ``TokenKVCache`` whose stale rows are read along their last change (see the module docstring)."""

    def __init__(self, cache: TokenKVCache, layers: int):
        """Forecast the first ``layers`` layers (all of them if there are fewer); the others read as cached."""
        self.cache = cache
        self.layers = min(layers, len(cache.keys))
        self.previous_keys = [torch.zeros_like(rows) for rows in cache.keys[: self.layers]]
        self.previous_values = [torch.zeros_like(rows) for rows in cache.values[: self.layers]]
        self.reach: torch.Tensor | None = None  # (N,) τ per token for the coming forward; None: no forecast

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes + sum(t.numel() * t.element_size() for t in self.previous_keys + self.previous_values)

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor,
               active: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write fresh K/V (B, H, a, hd) for ``active`` (all tokens if None), keeping the rows they replace;
        return all N rows, the stale ones forecast (in the forecast layers)."""
        if layer >= self.layers:
            return self.cache.update(layer, key, value, active)
        current = (self.cache.keys[layer], self.cache.values[layer])
        previous = (self.previous_keys[layer], self.previous_values[layer])
        rows = None if active is None else active.to(current[0].device)
        for kept, now in zip(previous, current):
            if rows is None:
                kept.copy_(now)
            elif is_float8(now.dtype):  # index_copy_ has no float8 kernel: copy the raw bytes
                kept.view(torch.uint8).index_copy_(2, rows, now.view(torch.uint8).index_select(2, rows))
            else:
                kept.index_copy_(2, rows, now.index_select(2, rows))
        keys, values = self.cache.update(layer, key, value, active)  # (B, H, N, hd) in the compute dtype
        if active is None or self.reach is None:
            return keys, values
        reach = self.reach.to(keys.device, keys.dtype)[None, None, :, None]  # (1, 1, N, 1)
        old_keys = previous[0].to(keys.device, non_blocking=True).to(keys.dtype)
        old_values = previous[1].to(values.device, non_blocking=True).to(values.dtype)
        return keys + reach * (keys - old_keys), values + reach * (values - old_values)
