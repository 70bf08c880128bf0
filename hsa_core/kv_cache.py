"""Per-layer self-attention K/V for every token of one guidance branch.

HSA computes only the active tokens at a step, but their queries must see the whole video. Each
layer's keys and values are therefore kept for all N tokens: active tokens overwrite their rows
with fresh K/V, and inactive tokens contribute the K/V from their last evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch


def kv_cache_bytes(num_layers: int, num_tokens: int, width: int, dtype: torch.dtype, branches: int = 1) -> int:
    """L × N × d × 2 (K and V) × bytes per element × guidance branches."""
    element = torch.empty((), dtype=dtype).element_size()
    return num_layers * num_tokens * width * 2 * element * branches


CacheLocation = Literal["device", "host"]


class TokenKVCache:
    """K/V rows of shape (B, heads, N, head_dim) per layer, stored in ``dtype``.

    A lower-precision cache (bf16 halves an fp32 cache, float8 halves a bf16 one) saves memory; rows
    are cast back to the compute dtype when attended, so only the cached context loses precision,
    never the active tokens' own K/V.

    ``location="host"`` keeps the rows in CPU memory (pinned when CUDA is there) instead of on the
    compute ``device``: a cache too large for the GPU still runs, at the price of moving each layer's
    N rows to the device whenever that layer attends. The arithmetic is the same either way.
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
        location: CacheLocation = "device",
    ):
        if location not in ("device", "host"):
            raise ValueError(f"location must be 'device' or 'host', got {location!r}")
        shape = (batch, heads, num_tokens, head_dim)
        self.device = torch.device(device)
        storage = self.device if location == "device" else torch.device("cpu")
        pin = storage.type == "cpu" and self.device.type == "cuda"  # pinned pages: asynchronous copies to the GPU

        def rows() -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=storage, pin_memory=pin)

        self.keys = [rows() for _ in range(num_layers)]
        self.values = [rows() for _ in range(num_layers)]
        self.num_tokens = num_tokens
        self.location = location

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(
        self, layer: int, key: torch.Tensor, value: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write fresh K/V (B, H, a, hd) for ``active`` (all tokens if None); return all N rows."""
        cached_k, cached_v = self.keys[layer], self.values[layer]
        if active is None:
            cached_k.copy_(_to_cache_dtype(key, cached_k.dtype))
            cached_v.copy_(_to_cache_dtype(value, cached_v.dtype))
            return key, value  # every row is fresh: attend to them directly, uncast
        rows = active.to(cached_k.device)
        _write_rows(cached_k, rows, _to_cache_dtype(key, cached_k.dtype).to(cached_k.device))
        _write_rows(cached_v, rows, _to_cache_dtype(value, cached_v.dtype).to(cached_v.device))
        return (cached_k.to(key.device, non_blocking=True).to(key.dtype),
                cached_v.to(value.device, non_blocking=True).to(value.dtype))


def is_float8(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point and torch.finfo(dtype).bits == 8


def _to_cache_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast to the cache dtype; float8 saturates at its largest value (a plain cast may give NaN)."""
    if is_float8(dtype):
        limit = torch.finfo(dtype).max
        return x.clamp(-limit, limit).to(dtype)
    return x.to(dtype)


def _write_rows(cache: torch.Tensor, rows: torch.Tensor, fresh: torch.Tensor) -> None:
    """cache[:, :, rows] = fresh; float8 rows are copied as raw bytes (index_copy_ has no float8 kernel)."""
    if is_float8(cache.dtype):
        cache.view(torch.uint8).index_copy_(2, rows, fresh.view(torch.uint8))
    else:
        cache.index_copy_(2, rows, fresh)
