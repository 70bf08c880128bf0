"""Device memory around a sampling run: the K/V cache estimate, the fit check, an OOM-safe decode.

HSA keeps, per guidance branch (CFG's two, plus one per further term such as LTX-2's modality
guidance), every layer's keys and values for all N tokens: L × N × d × 2 values.
For Wan 2.1 14B at 480p / 81 frames that is 40 × 32 760 × 5120 × 2 × 2 bytes ≈ 27 GB per branch in
bf16, on top of the model — so the size is reported before sampling, checked against what the
device has free, and can be halved (or quartered) with a lower-precision cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

from .errors import InsufficientMemoryError
from .kv_cache import kv_cache_bytes

GIB = 1024**3
Decoded = TypeVar("Decoded")


@dataclass(frozen=True)
class KVCacheEstimate:
    """The K/V cache one sampling run allocates (nothing at budget 1.0)."""

    layers: int
    tokens: int
    width: int
    dtype: torch.dtype
    branches: int  # guidance branches (model forwards per step): each has its own cache

    @property
    def bytes_per_value(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def total_bytes(self) -> int:
        return kv_cache_bytes(self.layers, self.tokens, self.width, self.dtype, self.branches)

    def describe(self) -> str:
        return (
            f"{self.layers} layers × {self.tokens} tokens × {self.width} × 2 (K, V) × {self.bytes_per_value} B "
            f"({str(self.dtype).removeprefix('torch.')}) × {self.branches} guidance branch"
            f"{'es' if self.branches > 1 else ''} = {self.total_bytes / GIB:.2f} GiB"
        )


def free_device_bytes(device: torch.device) -> int | None:
    """Bytes free on a CUDA device; None where we cannot tell (CPU memory is left to the OS)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


def check_kv_cache_fits(
    estimate: KVCacheEstimate, working_bytes: int, device: torch.device, free_bytes: int | None = None
) -> None:
    """Raise InsufficientMemoryError when the cache plus a forward's working memory exceed the free memory.

    Call it with the model already on the device, so its weights are no longer free. ``working_bytes``
    is the transient memory of one forward (activations); ``free_bytes`` defaults to the device's.
    """
    if free_bytes is None:
        free_bytes = free_device_bytes(device)
    needed = estimate.total_bytes + working_bytes
    if free_bytes is None or needed <= free_bytes:
        return
    suggestions = ["fewer frames or a lower resolution", "budget 1.0 (no cache)"]
    if estimate.bytes_per_value > 2:
        suggestions.insert(0, "a bfloat16 K/V cache")
    elif estimate.bytes_per_value == 2 and hasattr(torch, "float8_e4m3fn"):
        suggestions.insert(0, "a float8_e4m3fn K/V cache")
    raise InsufficientMemoryError(
        f"the K/V cache needs {estimate.describe()}, plus about {working_bytes / GIB:.2f} GiB for a forward, "
        f"but only {free_bytes / GIB:.2f} GiB are free on {device} with the model loaded; "
        f"try {', or '.join(suggestions)}"
    )


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def decode_without_losing_latents(
    vae, decode: Callable[[], Decoded], on_fallback: Callable[[str], None] | None = None
) -> tuple[Decoded, str]:
    """Run ``decode()``; on out-of-memory retry with the VAE tiled, then with the VAE on the CPU.

    Returns the decoded value and how it was decoded: "device", "tiled" or "cpu". The caller keeps
    the latents, so even an error from the last attempt loses no sampling work. ``decode`` must read
    the VAE's current device and dtype, since the CPU fallback moves it.
    """
    try:
        return decode(), "device"
    except RuntimeError as error:
        if not _is_out_of_memory(error):
            raise
    _release_cached_memory()
    if hasattr(vae, "enable_tiling") and not getattr(vae, "use_tiling", False):
        if on_fallback is not None:
            on_fallback("tiled")
        vae.enable_tiling()
        try:
            return decode(), "tiled"
        except RuntimeError as error:
            if not _is_out_of_memory(error):
                raise
        finally:
            vae.disable_tiling()  # the next job may fit untiled, which is faster
        _release_cached_memory()
    if on_fallback is not None:
        on_fallback("cpu")
    device = next(vae.parameters()).device
    vae.to("cpu")
    try:
        return decode(), "cpu"
    finally:
        vae.to(device)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
