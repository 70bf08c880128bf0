"""Device memory around a sampling run: the K/V cache estimate, the fit check, an OOM-safe decode.

HSA keeps, per guidance branch (CFG's two, plus one per further term such as LTX-2's modality
guidance), every layer's keys and values for all N tokens: L × N × d × 2 values.
For Wan 2.1 14B at 480p / 81 frames that is 40 × 32 760 × 5120 × 2 × 2 bytes ≈ 27 GB per branch in
bf16, on top of the model — so the size is reported before sampling, checked against what the
device has free, and can be halved (or quartered) with a lower-precision cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    forecast_layers: int = 0  # layers whose previous rows are kept too (HSAConfig.kv_forecast_layers)

    @property
    def cached_layers(self) -> int:
        """Layer-sized row sets held per branch: every layer once, the forecast ones twice."""
        return self.layers + min(self.forecast_layers, self.layers)

    @property
    def bytes_per_value(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def total_bytes(self) -> int:
        return kv_cache_bytes(self.cached_layers, self.tokens, self.width, self.dtype, self.branches)

    def describe(self) -> str:
        forecast = self.cached_layers - self.layers
        layers = f"({self.layers} + {forecast} forecast) layers" if forecast else f"{self.layers} layers"
        return (
            f"{layers} × {self.tokens} tokens × {self.width} × 2 (K, V) × {self.bytes_per_value} B "
            f"({str(self.dtype).removeprefix('torch.')}) × {self.branches} guidance branch"
            f"{'es' if self.branches > 1 else ''} = {self.total_bytes / GIB:.2f} GiB"
        )


def free_device_bytes(device: torch.device) -> int | None:
    """Bytes this process can still allocate on a CUDA device: what the driver reports free plus what
    torch's caching allocator holds unused (a finished job's cache stays reserved for the next one);
    None where we cannot tell (CPU memory is left to the OS)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def free_host_bytes() -> int | None:
    """Bytes of host memory available (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


@dataclass(frozen=True)
class KVCacheFit:
    """Whether HSA's K/V cache fits next to a forward's working memory, and which ways out do.

    free_bytes: what the device has left with the model loaded (None: unlimited, e.g. a CPU);
    host_free_bytes: host memory available, for a cache kept on the host.
    """

    estimate: KVCacheEstimate
    working_bytes: int
    free_bytes: int | None
    location: str = "device"
    host_free_bytes: int | None = None

    def _fits(self, cache_bytes: int, location: str) -> bool:
        if self.free_bytes is None:
            return True
        if location == "host":
            host_room = self.host_free_bytes is None or cache_bytes <= self.host_free_bytes
            # the cache lives on the host; one layer of it (its forecast rows too) is on the device while it attends
            layer_bytes = cache_bytes // max(1, self.estimate.cached_layers) * (2 if self.estimate.forecast_layers else 1)
            return host_room and self.working_bytes + layer_bytes <= self.free_bytes
        return cache_bytes + self.working_bytes <= self.free_bytes

    @property
    def fits(self) -> bool:
        return self._fits(self.estimate.total_bytes, self.location)

    @property
    def full_budget_fits(self) -> bool:
        """Whether budget 1.0, which keeps no cache, fits (a forward's working memory alone)."""
        return self.free_bytes is None or self.working_bytes <= self.free_bytes

    def alternatives(self) -> list[str]:
        """The ways out that fit, each with its size: cheaper cache dtypes, the host, fewer tokens, budget 1."""
        estimate, options = self.estimate, []
        cheaper = [torch.bfloat16] if estimate.bytes_per_value > 2 else []
        if hasattr(torch, "float8_e4m3fn") and estimate.bytes_per_value > 1:
            cheaper.append(torch.float8_e4m3fn)
        if estimate.forecast_layers:
            plain = replace(estimate, forecast_layers=0)
            if self._fits(plain.total_bytes, self.location):
                options.append(f"no K/V forecast (kv_forecast_layers=0: {_gib(plain.total_bytes)})")
        for dtype in cheaper:
            smaller = replace(estimate, dtype=dtype)
            if self._fits(smaller.total_bytes, self.location):
                options.append(f"a {str(dtype).removeprefix('torch.')} K/V cache ({_gib(smaller.total_bytes)})")
        if self.location == "device" and self._fits(estimate.total_bytes, "host"):
            options.append(f"the K/V cache kept in host memory ({_gib(estimate.total_bytes)} of "
                           f"{_gib(self.host_free_bytes) if self.host_free_bytes is not None else 'host memory'})")
        if self.free_bytes is not None and self.location == "device":
            # the cache and the working memory are both linear in the tokens
            tokens = int(estimate.tokens * max(0, self.free_bytes) / (estimate.total_bytes + self.working_bytes))
            if tokens > 0:
                options.append(f"fewer frames or a lower resolution (at most {tokens} tokens; this request has "
                               f"{estimate.tokens})")
        if self.full_budget_fits:
            options.append("budget 1.0 (no K/V cache)")
        return options

    def refusal(self) -> str:
        """Why the cache does not fit, with the numbers and only the ways out that do."""
        where = "in host memory" if self.location == "host" else "on the device"
        free = _gib(self.free_bytes) if self.free_bytes is not None else "?"
        options = self.alternatives()
        return (f"the K/V cache needs {self.estimate.describe()} {where}, plus about {_gib(self.working_bytes)} "
                f"for a forward, but only {free} are free with the model loaded; "
                + (f"options that fit: {'; or '.join(options)}" if options else "nothing smaller fits either"))


def check_kv_cache_fits(
    estimate: KVCacheEstimate, working_bytes: int, device: torch.device, free_bytes: int | None = None,
    location: str = "device",
) -> None:
    """Raise InsufficientMemoryError when the cache plus a forward's working memory exceed the free memory.

    Call it with the model already on the device, so its weights are no longer free. ``working_bytes``
    is the transient memory of one forward (activations); ``free_bytes`` defaults to the device's.
    """
    if free_bytes is None:
        free_bytes = free_device_bytes(device)
    fit = KVCacheFit(estimate, working_bytes, free_bytes, location,
                     free_host_bytes() if location == "host" or free_bytes is not None else None)
    if not fit.fits:
        raise InsufficientMemoryError(f"{fit.refusal()} (on {device})")


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
