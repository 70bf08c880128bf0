"""What every sampler shares: conditioning, guidance, per-step statistics, the result type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..adapters.base import DenoiserAdapter, TokenGrid
from ..errors import ConfigError
from ..schedule import FlowMatchSchedule


@dataclass
class Conditioning:
    """Text conditioning and classifier-free guidance for one job.

    Guidance is on when ``guidance_scale > 1`` (diffusers' rule) and then needs negative embeddings
    (encode an empty prompt for plain CFG): v̂ = v_u + w·(v_c − v_u). ``guidance_scale`` may also be
    an (N,) tensor of per-token scales (LTX-2 guides its video and audio tokens with their own
    scales); guidance is then on when any scale exceeds 1.

    ``prompt_embeds`` is whatever the adapter's ``prepare_branch`` takes for one branch: a (B, L,
    text_dim) tensor for Wan, the connectors' video and audio text states for LTX-2
    (``LTX2TextEmbeddings``). ``model_inputs`` holds conditioning that every CFG branch shares and
    only some models take (Wan I2V: ``image_embeds``, ``condition``); it is passed to
    ``prepare_branch`` too.
    """

    prompt_embeds: Any  # (B, L, text_dim) for Wan
    negative_prompt_embeds: Any = None
    guidance_scale: float | torch.Tensor = 1.0
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.uses_guidance and self.negative_prompt_embeds is None:
            raise ConfigError("guidance_scale > 1 needs negative_prompt_embeds (encode '' for plain CFG)")

    @property
    def uses_guidance(self) -> bool:
        return bool((torch.as_tensor(self.guidance_scale) > 1.0).any())


class GuidedDenoiser:
    """The guided velocity of a token subset, one adapter branch (and K/V cache) per CFG branch."""

    def __init__(
        self,
        adapter: DenoiserAdapter,
        grid: TokenGrid,
        conditioning: Conditioning,
        with_kv_cache: bool = False,
        cache_dtype: torch.dtype | None = None,
    ):
        self.adapter = adapter
        self.guidance_scale = conditioning.guidance_scale
        embeds = [conditioning.prompt_embeds]
        if conditioning.uses_guidance:
            embeds.append(conditioning.negative_prompt_embeds)
        self.branches = [adapter.prepare_branch(grid, e, **conditioning.model_inputs) for e in embeds]
        self.caches = [adapter.new_kv_cache(grid, cache_dtype) if with_kv_cache else None for _ in embeds]

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches if cache is not None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, a, D) → guided velocity (B, a, D) in float32."""
        velocities = [
            self.adapter.velocity(x, sigma, branch, active=active, kv_cache=cache).float()
            for branch, cache in zip(self.branches, self.caches)
        ]
        if len(velocities) == 1:
            return velocities[0]
        conditional, unconditional = velocities
        scale = self.guidance_scale
        if isinstance(scale, torch.Tensor):  # per-token scales, gathered at the computed tokens
            scale = (scale if active is None else scale[active]).to(conditional.device)[None, :, None]  # (1, a, 1)
        return unconditional + scale * (conditional - unconditional)


@dataclass
class StepStats:
    step: int
    sigma: float
    active_tokens: int  # tokens computed at this step (per CFG branch)
    refreshed_tokens: int  # of those, tokens that had been skipped at the previous step
    velocity_drift: float | None  # mean ‖v_new − v_cached‖₁ / ‖v_cached‖₁ over refreshed tokens
    seconds: float


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, N, D) float32, the final latent tokens
    steps: list[StepStats]
    num_tokens: int
    token_fraction: float  # Σ active / (T · N)
    predicted_compute_fraction: float  # what the plan promised, by the cost model
    achieved_compute_fraction: float  # what was computed, by the same cost model
    predicted_seconds: float | None
    seconds: float
    kv_cache_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_velocity_drift(self) -> float | None:
        drifts = [s.velocity_drift for s in self.steps if s.velocity_drift is not None]
        return sum(drifts) / len(drifts) if drifts else None


StepCallback = Callable[[StepStats], None]


class Sampler(Protocol):
    """Integrates the flow from noise (σ = 1) to data (σ = 0).

    ``x`` holds the initial tokens: noise for generated tokens, clean values for the ``frozen``
    conditioning tokens, which are never stepped. ``callback`` sees every step's stats; an
    exception raised there aborts sampling (cancellation).
    """

    def sample(
        self,
        adapter: DenoiserAdapter,
        x: torch.Tensor,
        grid: TokenGrid,
        conditioning: Conditioning,
        schedule: FlowMatchSchedule,
        frozen: torch.Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> SampleResult: ...


def sigma_input(sigma: float | torch.Tensor, batch: int, frozen: torch.Tensor | None) -> torch.Tensor:
    """The model's σ: (B,) when all tokens share it, (B, N) with 0 at frozen tokens otherwise."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    if frozen is None:
        return sigma.expand(batch)
    return torch.where(frozen, torch.zeros(()), sigma).expand(batch, -1)


def validate_inputs(x: torch.Tensor, grid: TokenGrid, frozen: torch.Tensor | None) -> None:
    expected = (grid.batch, grid.num_tokens, grid.token_dim)
    if tuple(x.shape) != expected:
        raise ConfigError(f"initial tokens must have shape {expected}, got {tuple(x.shape)}")
    if frozen is not None:
        if frozen.dtype != torch.bool or tuple(frozen.shape) != (grid.num_tokens,):
            raise ConfigError(f"frozen must be a bool tensor of shape ({grid.num_tokens},)")
        if bool(frozen.all()):
            raise ConfigError("every token is frozen: nothing to generate")


class Stopwatch:
    """Wall time that waits for queued GPU work, so per-step timings are real."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
