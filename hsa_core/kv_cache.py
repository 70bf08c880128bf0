"""Per-layer self-attention K/V for every token of one CFG branch.

HSA computes only the active tokens at a step, but their queries must see the whole video. Each
layer's keys and values are therefore kept for all N tokens: active tokens overwrite their rows
with fresh K/V, and inactive tokens contribute the K/V from their last evaluation.
"""

from __future__ import annotations

import torch


def kv_cache_bytes(num_layers: int, num_tokens: int, width: int, dtype: torch.dtype, branches: int = 1) -> int:
    """L × N × d × 2 (K and V) × bytes per element × CFG branches."""
    element = torch.empty((), dtype=dtype).element_size()
    return num_layers * num_tokens * width * 2 * element * branches


class TokenKVCache:
    """K/V rows of shape (B, heads, N, head_dim) per layer, stored in ``dtype``.

    A lower-precision cache (bf16) halves memory; rows are cast back to the compute dtype when
    attended, so only the cached context loses precision, never the active tokens' own K/V.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        heads: int,
        num_tokens: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (batch, heads, num_tokens, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_tokens = num_tokens

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(
        self, layer: int, key: torch.Tensor, value: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write fresh K/V (B, H, a, hd) for ``active`` (all tokens if None); return all N rows."""
        cached_k, cached_v = self.keys[layer], self.values[layer]
        if active is None:
            cached_k.copy_(key)
            cached_v.copy_(value)
            return key, value  # every row is fresh: attend to them directly, uncast
        cached_k.index_copy_(2, active, key.to(cached_k.dtype))
        cached_v.index_copy_(2, active, value.to(cached_v.dtype))
        return cached_k.to(key.dtype), cached_v.to(value.dtype)
