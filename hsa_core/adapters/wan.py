"""Wan 2.1 / 2.2 through diffusers' ``WanTransformer3DModel``, with token-subset forwards.

The adapter runs diffusers' own transformer blocks (modulation, norms, FFN, gating are theirs) and
swaps the attention processors of each block:

* ``KVCacheSyncAttnProcessor`` (self-attention): projects Q/K/V for the active tokens only, applies
  RoPE at their true (f, h, w) positions, writes K/V into the layer's cache rows and lets the
  active queries attend over all N cached keys/values.
* ``CachedCrossAttnProcessor`` (text cross-attention, plus the CLIP image context of Wan 2.1 I2V):
  the text and image K/V do not depend on the step, so they are projected once per job and CFG
  branch and reused at every step.

Image-to-video the Wan 2.1 / Wan 2.2 A14B way concatenates a per-token condition (a 4-channel
first-frame mask and the VAE latents of the image, zero-padded over time) to the noisy latent along
channels. The condition does not change during sampling, so the branch keeps it patchified and a
token subset gathers its rows: the patch embedding of [latent tokens ‖ condition tokens] is the
diffusers Conv3d over the channel-concatenated video, since both are channel-major.

Per-token modulation comes for free: diffusers' block accepts a per-token timestep embedding of
shape (B, a, 6, dim) (the Wan 2.2 TI2V path), so conditioning tokens held at σ = 0 and subsets of
tokens both just gather their rows. When no forward context is set the processors compute exactly
what diffusers' ``WanAttnProcessor`` computes, so the model keeps working in diffusers pipelines.

The adapter owns the transformer it wraps (it installs processors on it) and is not thread-safe:
one adapter per worker process, one job at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError, GridError, UnsupportedModelError
from ..kv_cache import CacheLocation, TokenKVCache
from .base import TokenGrid


def _apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, S, H, hd) by diffusers' Wan RoPE tables (1, S, 1, hd).

    The same arithmetic (and dtype promotion) as diffusers' Wan processor, so results match bit for bit.
    """
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, H·hd) → (B, H, S, hd)."""
    return x.unflatten(2, (heads, -1)).transpose(1, 2)


@dataclass
class WanBranch:
    """Step-independent state of one CFG branch of one job."""

    grid: TokenGrid
    text_states: torch.Tensor  # (B, L, dim) text embeddings after the model's projection
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: K, V of shape (B, H, L, hd)
    rope_cos: torch.Tensor  # (1, N, 1, hd)
    rope_sin: torch.Tensor  # (1, N, 1, hd)
    image_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: CLIP image K, V (B, H, I, hd)
    condition_tokens: torch.Tensor | None = None  # (B, N, C_cond·pt·ph·pw) channel-concatenated I2V condition


@dataclass
class _ForwardContext:
    """What the swapped processors read during one adapter forward; empty outside of it."""

    active: torch.Tensor | None = None
    kv_cache: TokenKVCache | None = None
    branch: WanBranch | None = None
    counters: dict[str, int] = field(default_factory=lambda: {"cross_kv_projections": 0, "self_attention_calls": 0})


class KVCacheSyncAttnProcessor:
    """Self-attention of the active tokens against all N tokens' keys and values."""

    def __init__(self, layer: int, context: _ForwardContext):
        self.layer = layer
        self.context = context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        self.context.counters["self_attention_calls"] += 1
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)

        query = query.unflatten(2, (attn.heads, -1))  # (B, a, H, hd)
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_rotary(query, *rotary_emb)
            key = _apply_rotary(key, *rotary_emb)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # (B, H, a, hd)

        cache = self.context.kv_cache
        if cache is not None:
            key, value = cache.update(self.layer, key, value, self.context.active)  # (B, H, N, hd)
        # without a cache a token subset attends to itself only (the no-KV-sync ablation)

        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)  # (B, H, a, hd)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


# diffusers' Wan processor splits [image context ‖ text] at this many text tokens from the end.
_WAN_TEXT_CONTEXT_LENGTH = 512


class CachedCrossAttnProcessor:
    """Text (and image) cross-attention with K/V projected once per job (they do not depend on the step)."""

    def __init__(self, layer: int, context: _ForwardContext):
        self.layer = layer
        self.context = context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        query = _split_heads(attn.norm_q(attn.to_q(hidden_states)), attn.heads)
        branch = self.context.branch
        image_kv = None
        if branch is not None:
            key, value = branch.cross_kv[self.layer]
            if branch.image_kv is not None:
                image_kv = branch.image_kv[self.layer]
        else:  # inside a diffusers pipeline: the image context comes first in encoder_hidden_states
            if attn.add_k_proj is not None:
                image_length = encoder_hidden_states.shape[1] - _WAN_TEXT_CONTEXT_LENGTH
                image_kv = project_image_kv(attn, encoder_hidden_states[:, :image_length])
                encoder_hidden_states = encoder_hidden_states[:, image_length:]
            key, value = project_cross_kv(attn, encoder_hidden_states)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        if image_kv is not None:  # Wan 2.1 I2V: a second attention over the CLIP image tokens, summed
            image_out = F.scaled_dot_product_attention(query, *image_kv)
            out = out + image_out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def project_cross_kv(attn, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention K/V of the text states: (B, H, L, hd) each."""
    if attn.fused_projections:
        key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
    else:
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
    return _split_heads(attn.norm_k(key), attn.heads), _split_heads(value, attn.heads)


def project_image_kv(attn, image_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention K/V of the projected CLIP image tokens: (B, H, I, hd) each."""
    if attn.fused_projections:
        key, value = attn.to_added_kv(image_states).chunk(2, dim=-1)
    else:
        key, value = attn.add_k_proj(image_states), attn.add_v_proj(image_states)
    return _split_heads(attn.norm_added_k(key), attn.heads), _split_heads(value, attn.heads)


class WanAdapter:
    """``DenoiserAdapter`` over a diffusers ``WanTransformer3DModel``.

    Wan 2.1 T2V / I2V, Wan 2.2 TI2V and each expert of Wan 2.2 A14B. I2V checkpoints take
    ``prepare_branch(..., condition=…)`` — the (B, in_channels − out_channels, F, H, W) mask and image
    latents diffusers' ``WanImageToVideoPipeline.prepare_latents`` builds — and, when the checkpoint
    has a CLIP image context (``image_dim``, Wan 2.1 I2V), ``image_embeds`` (B, I, image_dim).
    """

    def __init__(self, transformer):
        config = transformer.config
        if (config.image_dim is None) != (config.added_kv_proj_dim is None):
            raise UnsupportedModelError(
                "Wan checkpoints with only one of image_dim and added_kv_proj_dim are not supported: the CLIP "
                "image context needs both the image embedder and the image K/V projections"
            )
        self.transformer = transformer.eval()
        self.patch = tuple(config.patch_size)
        self.num_layers = len(transformer.blocks)
        self.heads = config.num_attention_heads
        self.head_dim = config.attention_head_dim
        self.width = self.heads * self.head_dim
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels or config.in_channels
        # channels concatenated to the noisy latent (I2V: mask + image latents); 0 for T2V and TI2V
        self.condition_channels = self.in_channels - self.out_channels
        self.image_dim = config.image_dim
        self.rope_max_seq_len = config.rope_max_seq_len
        self.num_train_timesteps = 1000  # Wan's timestep = σ · 1000
        self._bind_weights()

        self._context = _ForwardContext()
        for layer, block in enumerate(transformer.blocks):
            block.attn1.set_processor(KVCacheSyncAttnProcessor(layer, self._context))
            block.attn2.set_processor(CachedCrossAttnProcessor(layer, self._context))

    def _bind_weights(self) -> None:
        """The patch embedding and output projection as the forward uses them, from the transformer's
        current parameters (again after every move: they are tensors of their own)."""
        transformer = self.transformer
        # 1. Patch embedding as a linear map over channel-major patches (Conv3d with stride = kernel).
        conv = transformer.patch_embedding
        self._embed_weight = conv.weight.detach().flatten(1)  # (dim, C·pt·ph·pw)
        self._embed_bias = conv.bias.detach()
        # 4. Output projection with rows permuted from diffusers' (pt, ph, pw, C) to our (C, pt, ph, pw).
        pt, ph, pw = self.patch
        c = self.out_channels
        order = torch.arange(pt * ph * pw * c).reshape(pt, ph, pw, c).permute(3, 0, 1, 2).reshape(-1)
        order = order.to(conv.weight.device)
        self._proj_weight = transformer.proj_out.weight.detach()[order]
        self._proj_bias = transformer.proj_out.bias.detach()[order]

    def to(self, device: torch.device | str) -> "WanAdapter":
        """Move the transformer (a two-expert model's idle expert waits on the CPU)."""
        if torch.device(device) != self.device:
            self.transformer.to(device)
            self._bind_weights()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self._embed_weight.dtype

    @property
    def device(self) -> torch.device:
        return self._embed_weight.device

    @property
    def cross_kv_projections(self) -> int:
        """How many times a layer's text K/V were projected (instrumentation for tests and metrics)."""
        return self._context.counters["cross_kv_projections"]

    @property
    def self_attention_calls(self) -> int:
        """Self-attention layer evaluations so far (a block skipped by a caching hook never gets here)."""
        return self._context.counters["self_attention_calls"]

    def token_grid(self, latent_shape: tuple[int, ...]) -> TokenGrid:
        grid = TokenGrid(tuple(latent_shape), self.patch)
        if grid.channels != self.out_channels:
            raise GridError(f"latents have {grid.channels} channels but the model expects {self.out_channels}")
        if max(grid.shape) > self.rope_max_seq_len:
            raise GridError(
                f"post-patch grid {grid.shape} exceeds the model's rope_max_seq_len {self.rope_max_seq_len}"
            )
        return grid

    @torch.inference_mode()
    def prepare_branch(
        self,
        grid: TokenGrid,
        encoder_hidden_states: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> WanBranch:
        """``image_embeds`` (B, I, image_dim) and ``condition`` (B, C_cond, F, H, W): I2V checkpoints only."""
        model = self.transformer
        if encoder_hidden_states.shape[0] != grid.batch:
            raise GridError(
                f"text embeddings have batch {encoder_hidden_states.shape[0]} but the latents have {grid.batch}"
            )
        text_states = model.condition_embedder.text_embedder(encoder_hidden_states.to(self.dtype))
        cross_kv = [project_cross_kv(block.attn2, text_states) for block in model.blocks]
        self._context.counters["cross_kv_projections"] += len(cross_kv)
        # diffusers' rotary embedding reads only the shape of its input.
        freqs_cos, freqs_sin = model.rope(torch.empty(grid.latent_shape, device="meta"))  # (1, N, 1, hd)
        return WanBranch(
            grid=grid,
            text_states=text_states,
            cross_kv=cross_kv,
            rope_cos=freqs_cos,
            rope_sin=freqs_sin,
            image_kv=self._image_kv(image_embeds),
            condition_tokens=self._condition_tokens(grid, condition),
        )

    def batch_branches(self, branches: list[WanBranch]) -> WanBranch | None:
        """One branch whose batch stacks ``branches`` (branch-major: rows [k·B, (k+1)·B) are branch k), so
        every guidance branch runs in one forward; None when they cannot share one (text of different
        lengths, or only some with an image context).

        A forward of the stacked branch equals the branches' own forwards, row for row: nothing in a Wan
        block mixes samples of a batch. Its K/V cache needs the stacked batch (``new_kv_cache`` of a grid
        with that batch).
        """
        first = branches[0]
        if any(b.text_states.shape[1:] != first.text_states.shape[1:] or (b.image_kv is None) != (first.image_kv is None)
               or (b.condition_tokens is None) != (first.condition_tokens is None) for b in branches):
            return None
        if first.image_kv is not None and any(b.image_kv[0][0].shape[2] != first.image_kv[0][0].shape[2]
                                              for b in branches):
            return None

        def stacked_kv(per_branch):  # per branch: per layer (K, V) → per layer (K, V) over the stacked batch
            return [(torch.cat([kv[layer][0] for kv in per_branch]), torch.cat([kv[layer][1] for kv in per_branch]))
                    for layer in range(len(per_branch[0]))]

        grid = first.grid
        return WanBranch(
            grid=TokenGrid((grid.batch * len(branches), *grid.latent_shape[1:]), grid.patch),
            text_states=torch.cat([b.text_states for b in branches]),
            cross_kv=stacked_kv([b.cross_kv for b in branches]),
            rope_cos=first.rope_cos,
            rope_sin=first.rope_sin,
            image_kv=stacked_kv([b.image_kv for b in branches]) if first.image_kv is not None else None,
            condition_tokens=(torch.cat([b.condition_tokens for b in branches])
                              if first.condition_tokens is not None else None),
        )

    def _image_kv(self, image_embeds: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if self.image_dim is None:
            if image_embeds is not None:
                raise ConfigError("image_embeds given, but this Wan checkpoint has no image context (image_dim)")
            return None
        if image_embeds is None:
            raise ConfigError(
                "this Wan checkpoint attends to a CLIP image embedding (Wan 2.1 I2V): pass image_embeds, "
                "e.g. from WanImageToVideoPipeline.encode_image"
            )
        image_states = self.transformer.condition_embedder.image_embedder(image_embeds.to(self.dtype))
        return [project_image_kv(block.attn2, image_states) for block in self.transformer.blocks]

    def _condition_tokens(self, grid: TokenGrid, condition: torch.Tensor | None) -> torch.Tensor | None:
        if self.condition_channels == 0:
            if condition is not None:
                raise ConfigError("condition latents given, but this Wan checkpoint takes no condition channels")
            return None
        expected = (grid.batch, self.condition_channels, *grid.latent_shape[2:])
        if condition is None or tuple(condition.shape) != expected:
            got = "none" if condition is None else f"shape {tuple(condition.shape)}"
            raise ConfigError(
                f"this Wan checkpoint is image-to-video: it needs condition latents of shape {expected} "
                f"(mask + image latents, as WanImageToVideoPipeline.prepare_latents builds them), got {got}"
            )
        return TokenGrid(expected, self.patch).patchify(condition.to(self.dtype))

    def new_kv_cache(self, grid: TokenGrid, dtype: torch.dtype | None = None,
                     location: CacheLocation = "device") -> TokenKVCache:
        return TokenKVCache(self.num_layers, grid.batch, self.heads, grid.num_tokens, self.head_dim,
                            dtype or self.dtype, self.device, location)

    def _time_embedding(self, timestep: torch.Tensor, text_dtype: torch.dtype):
        """diffusers' condition embedder, timestep part: (M,) → temb (M, dim), projection (M, 6·dim)."""
        embedder = self.transformer.condition_embedder
        freqs = embedder.timesteps_proj(timestep)
        time_dtype = next(iter(embedder.time_embedder.parameters())).dtype
        if freqs.dtype != time_dtype and time_dtype != torch.int8:
            freqs = freqs.to(time_dtype)
        temb = embedder.time_embedder(freqs).to(text_dtype)
        return temb, embedder.time_proj(embedder.act_fn(temb))

    @torch.inference_mode()
    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        branch: WanBranch,
        active: torch.Tensor | None = None,
        kv_cache: TokenKVCache | None = None,
    ) -> torch.Tensor:
        model = self.transformer
        x = x.to(self.dtype)
        if branch.condition_tokens is not None:
            condition = branch.condition_tokens if active is None else branch.condition_tokens[:, active]
            x = torch.cat([x, condition], dim=-1)  # (B, a, C_in·pt·ph·pw), channel-major like the Conv3d input
        hidden = F.linear(x, self._embed_weight, self._embed_bias)  # (B, a, dim)

        rope_cos, rope_sin = branch.rope_cos, branch.rope_sin
        if active is not None:
            rope_cos, rope_sin = rope_cos[:, active], rope_sin[:, active]  # gathered at true positions

        timestep = sigma.to(torch.float32) * self.num_train_timesteps
        if timestep.ndim == 1:  # one timestep per sample: modulation broadcast over tokens
            temb, projection = self._time_embedding(timestep, branch.text_states.dtype)
            projection = projection.unflatten(1, (6, -1))  # (B, 6, dim)
        else:  # per-token timesteps (conditioning tokens at σ = 0): embed each distinct value once
            values, inverse = torch.unique(timestep, return_inverse=True)
            temb, projection = self._time_embedding(values, branch.text_states.dtype)
            temb = temb[inverse]  # (B, a, dim)
            projection = projection[inverse].unflatten(2, (6, -1))  # (B, a, 6, dim)

        self._context.active, self._context.kv_cache, self._context.branch = active, kv_cache, branch
        try:
            for block in model.blocks:
                hidden = block(hidden, branch.text_states, projection, (rope_cos, rope_sin))
        finally:
            self._context.active = self._context.kv_cache = self._context.branch = None

        table = model.scale_shift_table
        if temb.ndim == 3:
            shift, scale = (table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)  # (B, a, dim)
        else:
            shift, scale = (table + temb.unsqueeze(1)).chunk(2, dim=1)  # (B, 1, dim)
        hidden = (model.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        return F.linear(hidden, self._proj_weight, self._proj_bias)  # (B, a, C·pt·ph·pw)
