"""What every sampler shares: conditioning, guidance, per-step statistics, the result type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from ..adapters.base import DenoiserAdapter, TokenGrid
from ..errors import ConfigError
from ..schedule import FlowMatchSchedule


@dataclass(frozen=True)
class GuidanceTerm:
    """A guidance term besides CFG: one more branch, the conditional prompt through a weakened model.

    It adds ``scale · (v_c − v_k)`` to the guided velocity, v_k being the velocity the adapter computes
    for a branch prepared with ``branch_inputs`` (passed to ``prepare_branch`` with the job's
    ``model_inputs``). LTX-2's spatio-temporal guidance (self-attention skipped in some blocks) and
    modality-isolation guidance (no audio↔video attention) are such terms. ``scale`` may be an (N,)
    tensor of per-token scales.
    """

    name: str
    scale: float | torch.Tensor
    branch_inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GuidanceRescale:
    """Guidance rescaling (Lin et al., arXiv 2305.08891, §3.4) in x̂₀ space, per group of tokens, as diffusers'
    LTX-2 pipelines apply it.

    With x̂₀ = x − σ·v (σ the step's, frozen tokens included), x̂₀_c the conditional prediction and x̂₀_g
    the guided one, per sample over each group's tokens and channels:

        x̂₀ ← φ · x̂₀_g · std(x̂₀_c) / std(x̂₀_g) + (1 − φ) · x̂₀_g,     v = (x − x̂₀) / σ

    The standard deviations span every token of the group, computed or not: a token outside the
    computed subset contributes its last predictions (under the cached Euler update its x̂₀ does not
    move until it is computed again).

    factors: φ per group (0 leaves the group alone); groups: (N,) long, each token's group.
    """

    factors: tuple[float, ...]
    groups: torch.Tensor


@dataclass
class Conditioning:
    """Text conditioning and guidance for one job.

    Guidance is on when ``guidance_scale > 1`` (diffusers' rule) and then needs negative embeddings
    (encode an empty prompt for plain CFG): v̂ = v_u + w·(v_c − v_u). ``guidance_scale`` may also be
    an (N,) tensor of per-token scales (LTX-2 guides its video and audio tokens with their own
    scales); guidance is then on when any scale exceeds 1. ``extra_guidance`` adds further terms, each
    a branch of its own (``GuidanceTerm``); ``guidance_rescale`` rescales the result
    (``GuidanceRescale``).

    ``prompt_embeds`` is whatever the adapter's ``prepare_branch`` takes for one branch: a (B, L,
    text_dim) tensor for Wan, the connectors' video and audio text states for LTX-2
    (``LTX2TextEmbeddings``). ``model_inputs`` holds conditioning that every guidance branch shares and
    only some models take (Wan I2V: ``image_embeds``, ``condition``); it is passed to
    ``prepare_branch`` too.
    """

    prompt_embeds: Any  # (B, L, text_dim) for Wan
    negative_prompt_embeds: Any = None
    guidance_scale: float | torch.Tensor = 1.0
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_guidance: tuple[GuidanceTerm, ...] = ()
    guidance_rescale: GuidanceRescale | None = None

    def __post_init__(self) -> None:
        if self.uses_guidance and self.negative_prompt_embeds is None:
            raise ConfigError("guidance_scale > 1 needs negative_prompt_embeds (encode '' for plain CFG)")

    @property
    def uses_guidance(self) -> bool:
        return bool((torch.as_tensor(self.guidance_scale) > 1.0).any())

    @property
    def num_branches(self) -> int:
        """Model forwards per computed token and step: the conditional one, CFG's and one per extra term.
        Each branch keeps its own K/V cache under HSA."""
        return 1 + int(self.uses_guidance) + len(self.extra_guidance)


def _per_token(scale: float | torch.Tensor, active: torch.Tensor | None, device: torch.device):
    """A scalar as it is, or (N,) per-token scales gathered at the computed tokens as (1, a, 1)."""
    if not isinstance(scale, torch.Tensor):
        return scale
    scale = scale.to(device)
    return (scale if active is None else scale[active])[None, :, None]


class GuidedDenoiser:
    """The guided velocity of a token subset: one adapter branch (and K/V cache) per guidance branch.

    Branch 0 is the conditional model (v_c); with CFG the negative prompt's branch (v_u) follows, then
    one branch per ``GuidanceTerm`` (v_k). All branches compute the same tokens — one active set — and
    each keeps its own K/V cache, since each sees a different model. The guided velocity is

        v̂ = v_u + w·(v_c − v_u) + Σ_k s_k·(v_c − v_k)        (= v_c + (w − 1)·(v_c − v_u) + …)

    optionally rescaled per group of tokens (``GuidanceRescale``), which needs every token's latest
    conditional and guided x̂₀; they are kept here, (B, N, D) each, for the job.

    Batched guidance: when the adapter can stack its branches into one batch (``batch_branches``; Wan),
    every branch runs in one forward of batch branches × B — one model call per step instead of one per
    branch, the same rows, the same K/V bytes (one cache over the stacked batch). The price is one
    forward's activations per extra branch at once. ``batch_branches=False`` runs them one by one.
    """

    def __init__(
        self,
        adapter: DenoiserAdapter,
        grid: TokenGrid,
        conditioning: Conditioning,
        with_kv_cache: bool = False,
        cache_dtype: torch.dtype | None = None,
        cache_location: str = "device",
        batch_branches: bool = True,
    ):
        self.adapter = adapter
        self.uses_cfg = conditioning.uses_guidance
        self.guidance_scale = conditioning.guidance_scale
        self.extra_guidance = conditioning.extra_guidance
        self.rescale = conditioning.guidance_rescale
        branch_inputs = [(conditioning.prompt_embeds, {})]
        if conditioning.uses_guidance:
            branch_inputs.append((conditioning.negative_prompt_embeds, {}))
        branch_inputs += [(conditioning.prompt_embeds, term.branch_inputs) for term in self.extra_guidance]
        self.branches = [adapter.prepare_branch(grid, embeds, **conditioning.model_inputs, **inputs)
                         for embeds, inputs in branch_inputs]
        self.stacked = None  # every branch in one batch, when the adapter can stack them
        if batch_branches and len(self.branches) > 1 and hasattr(adapter, "batch_branches"):
            self.stacked = adapter.batch_branches(self.branches)
        cache_grids = [grid] * len(self.branches) if self.stacked is None else [self.stacked.grid]
        self.caches = [adapter.new_kv_cache(g, cache_dtype, cache_location) if with_kv_cache else None
                       for g in cache_grids]
        self._predictions: tuple[torch.Tensor, torch.Tensor] | None = None  # x̂₀ (conditional, guided), (B, N, D)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(cache.nbytes for cache in self.caches if cache is not None)

    def velocities(self, x: torch.Tensor, sigma: torch.Tensor, active: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each branch's velocity (B, a, D) in float32, in ``branches`` order."""
        if self.stacked is None:
            return [self.adapter.velocity(x, sigma, branch, active=active, kv_cache=cache).float()
                    for branch, cache in zip(self.branches, self.caches)]
        n = len(self.branches)
        out = self.adapter.velocity(torch.cat([x] * n), torch.cat([sigma] * n), self.stacked, active=active,
                                    kv_cache=self.caches[0])  # (n·B, a, D)
        return list(out.float().chunk(n))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, a, D) → guided velocity (B, a, D) in float32.

        sigma: (B,), or (B, N) per token as ``sigma_input`` makes it (0 at frozen tokens)."""
        return self.guide(x, sigma, self.velocities(x, sigma, active), active)

    def guide(self, x: torch.Tensor, sigma: torch.Tensor, velocities: list[torch.Tensor],
              active: torch.Tensor | None = None) -> torch.Tensor:
        """The branches' velocities (B, a, D), in ``branches`` order → the guided velocity (B, a, D)."""
        conditional, device = velocities[0], velocities[0].device
        guided, weakened_velocities = conditional, velocities[1:]
        if self.uses_cfg:
            unconditional, weakened_velocities = velocities[1], velocities[2:]
            scale = _per_token(self.guidance_scale, active, device)
            guided = unconditional + scale * (conditional - unconditional)
        for term, weakened in zip(self.extra_guidance, weakened_velocities, strict=True):
            guided = guided + _per_token(term.scale, active, device) * (conditional - weakened)
        if self.rescale is not None:
            guided = self._rescaled(x.float(), sigma, conditional, guided, active)
        return guided

    def _rescaled(self, x: torch.Tensor, sigma: torch.Tensor, conditional: torch.Tensor, guided: torch.Tensor,
                  active: torch.Tensor | None) -> torch.Tensor:
        # the step's σ: per-token σ's hold it at every generated token and 0 at frozen ones (sigma_input),
        # while diffusers converts every token, the frozen ones too, with the step's σ
        step_sigma = (sigma if sigma.ndim == 1 else sigma.amax(dim=1)).to(x.device, torch.float32)[:, None, None]
        fresh_conditional, fresh_guided = x - step_sigma * conditional, x - step_sigma * guided  # x̂₀, (B, a, D)
        if active is None:
            self._predictions = (fresh_conditional.clone(), fresh_guided.clone())
        elif self._predictions is None:
            raise ConfigError("guidance rescaling needs a full step (every token) before a token subset")
        else:
            for kept, fresh in zip(self._predictions, (fresh_conditional, fresh_guided)):
                kept[:, active] = fresh
        all_conditional, all_guided = self._predictions  # (B, N, D)
        groups = self.rescale.groups.to(x.device)
        computed_groups = groups if active is None else groups[active]
        rescaled = fresh_guided.clone()
        for group, factor in enumerate(self.rescale.factors):
            if factor <= 0:
                continue
            members, rows = groups == group, computed_groups == group
            # per sample, over the group's tokens and channels (torch's unbiased std, as diffusers)
            ratio = all_conditional[:, members].flatten(1).std(dim=1) / all_guided[:, members].flatten(1).std(dim=1)
            prediction = fresh_guided[:, rows]
            rescaled[:, rows] = factor * prediction * ratio[:, None, None] + (1 - factor) * prediction
        return (x - rescaled) / step_sigma


@dataclass
class StepStats:
    step: int
    sigma: float
    active_tokens: int  # tokens computed at this step (per guidance branch)
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
