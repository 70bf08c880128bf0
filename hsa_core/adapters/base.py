"""The seam between samplers and models.

A sampler sees a video latent as N tokens — one per patch of the latent grid — each a vector of
``token_dim`` numbers. It asks the adapter for the velocity of any subset of tokens; the adapter
hides patchify order, timestep conventions, text conditioning and the per-layer K/V cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import GridError


@dataclass(frozen=True)
class TokenGrid:
    """How a latent of shape (B, C, F, H, W) splits into patches of (pt, ph, pw).

    Token n sits at grid position (f, h, w) with n = f·H'·W' + h·W' + w, the order diffusers'
    Wan patch embedding produces; each token holds its patch as C·pt·ph·pw numbers, channel-major.
    """

    latent_shape: tuple[int, int, int, int, int]
    patch: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.latent_shape) != 5:
            raise GridError(f"latents must be 5-D (B, C, F, H, W), got shape {tuple(self.latent_shape)}")
        _, _, *sizes = self.latent_shape
        for axis, size, p in zip(("frames", "height", "width"), sizes, self.patch):
            if size < p or size % p != 0:
                raise GridError(f"latent {axis} {size} is not a positive multiple of the patch size {p}")

    @property
    def batch(self) -> int:
        return self.latent_shape[0]

    @property
    def channels(self) -> int:
        return self.latent_shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Post-patch grid (F', H', W')."""
        _, _, f, h, w = self.latent_shape
        pt, ph, pw = self.patch
        return f // pt, h // ph, w // pw

    @property
    def num_tokens(self) -> int:
        f, h, w = self.shape
        return f * h * w

    @property
    def token_dim(self) -> int:
        pt, ph, pw = self.patch
        return self.channels * pt * ph * pw

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) → (B, N, C·pt·ph·pw)."""
        if tuple(latents.shape) != tuple(self.latent_shape):
            raise GridError(f"latents of shape {tuple(latents.shape)} do not match the grid {self.latent_shape}")
        b, c = self.latent_shape[:2]
        (f, h, w), (pt, ph, pw) = self.shape, self.patch
        x = latents.reshape(b, c, f, pt, h, ph, w, pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, F', H', W', C, pt, ph, pw)
        return x.reshape(b, f * h * w, c * pt * ph * pw)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C·pt·ph·pw) → (B, C, F, H, W)."""
        b, c = self.latent_shape[:2]
        (f, h, w), (pt, ph, pw) = self.shape, self.patch
        x = tokens.reshape(b, f, h, w, c, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, F', pt, H', ph, W', pw)
        return x.reshape(self.latent_shape)

    @property
    def always_active(self) -> torch.Tensor | None:
        """(N,) bool of tokens computed at every step whatever the budget; None: HSA schedules every token.

        A video grid has none; LTX-2's joint audio-video layout marks its audio tokens.
        """
        return None

    def frame_mask(self, frames: range | list[int]) -> torch.Tensor:
        """(N,) bool: True for tokens whose post-patch frame index is in ``frames``."""
        f, h, w = self.shape
        mask = torch.zeros(f, dtype=torch.bool)
        mask[list(frames)] = True
        return mask[:, None].expand(f, h * w).reshape(-1)


@runtime_checkable
class DenoiserAdapter(Protocol):
    """A velocity model seen token by token.

    ``velocity`` with ``active=None`` is the full forward over all N tokens. With ``active`` (a
    sorted (a,) index tensor) only those tokens are computed: their queries attend over all N keys
    and values held in ``kv_cache`` (the cache gets their fresh K/V first), and nothing is computed
    for the other tokens. A full forward given a cache fills it.
    """

    num_layers: int
    width: int

    def token_grid(self, latent_shape: tuple[int, ...]) -> TokenGrid:
        """Validate a latent shape for this model and describe its tokens."""

    def prepare_branch(self, grid: TokenGrid, encoder_hidden_states: torch.Tensor, **model_inputs: Any) -> Any:
        """Per-job, per-guidance-branch state that does not depend on the step (text K/V, RoPE).

        ``model_inputs`` is the job's model-specific conditioning (``Conditioning.model_inputs``),
        e.g. Wan I2V's image embedding and channel-concatenated condition latents, plus the branch's
        own ``GuidanceTerm.branch_inputs`` (e.g. LTX-2's ``isolate_modalities``).
        """

    def new_kv_cache(self, grid: TokenGrid, dtype: torch.dtype | None = None, location: str = "device") -> Any:
        """An empty per-layer K/V cache for one guidance branch (None if the model needs none), kept on the
        compute device or in host memory (``location``, see ``TokenKVCache``)."""

    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        branch: Any,
        active: torch.Tensor | None = None,
        kv_cache: Any = None,
    ) -> torch.Tensor:
        """x: (B, a, token_dim); sigma: (B,) or per token (B, a). Returns (B, a, token_dim)."""
