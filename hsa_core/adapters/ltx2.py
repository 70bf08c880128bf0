"""LTX-2 through diffusers' ``LTX2VideoTransformer3DModel``: joint audio-video tokens, video token subsets.

LTX-2 denoises a video and its soundtrack together. Each transformer block runs, for both streams,
self-attention, text cross-attention, audio→video (a2v: video queries, audio keys) and video→audio
(v2a: audio queries, video keys) cross-attention and an FFN. The sampler sees one token sequence,
the N_v packed video tokens followed by the N_a audio tokens (``AudioVideoTokens``), and:

* **audio tokens are always active** (``always_active``): a few percent of the tokens (25 audio
  latents per second against 384 video tokens per latent frame at 512×768), so skipping them would
  save little while every video query attends to all of them through a2v. They are computed at every
  step and count towards the budget like video tokens (``samplers/hsa.py``);
* **video tokens are scheduled by HSA**. Keys and values made from video tokens are needed for all
  N_v of them by two attentions, so both keep a per-layer cache (``AudioVideoKVCache``) that the
  swapped processor (``VideoKVCacheAttnProcessor``) serves:

  | attention | queries | keys / values |
  |---|---|---|
  | video self-attention (``attn1``) | active video | all N_v video tokens: fresh rows if active, else cached |
  | video→audio (``video_to_audio_attn``) | all audio | the same, from the v2a cache |
  | audio→video (``audio_to_video_attn``) | active video | all audio tokens (always fresh): diffusers' processor |
  | audio self-attention, text cross-attention | — | diffusers' processors, unchanged |

Guidance branches (``prepare_branch``) change the model the way diffusers' pipelines do for their
extra forwards: spatio-temporal guidance (STG) passes each token's value projection through the video
and audio self-attentions of ``perturbed_blocks`` instead of attending (diffusers'
``LTX2PerturbedAttnProcessor`` with the whole batch perturbed; only models built with
``perturbed_attn`` take it), and modality isolation skips the a2v and v2a attentions of every block.
A perturbed self-attention reads no other token, so it neither reads nor writes its K/V cache layer.

Everything else is diffusers' own block code on fewer rows: per-token modulation (the time
embedding of each active video token's σ, so I2V conditioning tokens at σ = 0 come for free), the
RoPE tables at the tokens' true (t, y, x) coordinates gathered for the active rows, FFN and gates.
Video tokens are packed exactly like ``TokenGrid.patchify`` (channel-major patches), the order of
diffusers' ``LTX2Pipeline._pack_latents``; audio latents (B, C, L, M) become L tokens of C·M numbers.

Outside an adapter forward the swapped processors hand over to the processors they replaced, so the
model keeps working in diffusers pipelines. One adapter per model, one job at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError, GridError
from ..kv_cache import CacheLocation, TokenKVCache
from .base import TokenGrid

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin): (B, S, D) interleaved, or (B, H, S, D / 2H) split


@dataclass(frozen=True)
class AudioVideoTokens:
    """LTX-2's token sequence: the packed video tokens of ``video``, then one token per audio latent frame.

    frame_rate: the video's frames per second; it places video tokens in time for RoPE (audio tokens
        are placed by the audio VAE's sampling rate and hop length).
    """

    video: TokenGrid
    audio_shape: tuple[int, int, int, int]  # (B, C, L, M) audio latents: channels, latent frames, mel bins
    frame_rate: float

    def __post_init__(self) -> None:
        batch, channels, frames, mel_bins = self.audio_shape
        if batch != self.video.batch:
            raise GridError(f"audio latents have batch {batch} but the video latents have {self.video.batch}")
        if frames < 1:
            raise GridError("the audio needs at least one latent frame")
        if channels * mel_bins != self.video.token_dim:
            raise GridError(f"audio tokens of {channels}×{mel_bins} numbers do not match video tokens of "
                            f"{self.video.token_dim}: the sampler needs one token width")

    @property
    def batch(self) -> int:
        return self.video.batch

    @property
    def num_video_tokens(self) -> int:
        return self.video.num_tokens

    @property
    def num_audio_tokens(self) -> int:
        return self.audio_shape[2]

    @property
    def num_tokens(self) -> int:
        return self.num_video_tokens + self.num_audio_tokens

    @property
    def token_dim(self) -> int:
        return self.video.token_dim

    @property
    def always_active(self) -> torch.Tensor:
        """(N,) bool: the audio tokens."""
        return torch.arange(self.num_tokens) >= self.num_video_tokens

    def frame_mask(self, frames: range | list[int]) -> torch.Tensor:
        """(N,) bool: video tokens of the given latent frames (no audio token)."""
        return torch.cat([self.video.frame_mask(frames), torch.zeros(self.num_audio_tokens, dtype=torch.bool)])

    def pack(self, video_latents: torch.Tensor, audio_latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) and (B, C_a, L, M) → (B, N_v + L, D)."""
        if tuple(audio_latents.shape) != tuple(self.audio_shape):
            raise GridError(f"audio latents of shape {tuple(audio_latents.shape)} do not match {self.audio_shape}")
        audio_tokens = audio_latents.transpose(1, 2).flatten(2, 3)  # (B, L, C_a·M), diffusers' audio packing
        return torch.cat([self.video.patchify(video_latents), audio_tokens], dim=1)

    def unpack(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N_v + L, D) → video (B, C, F, H, W), audio (B, C_a, L, M)."""
        video_tokens, audio_tokens = tokens[:, : self.num_video_tokens], tokens[:, self.num_video_tokens :]
        _, channels, _, mel_bins = self.audio_shape
        audio = audio_tokens.unflatten(2, (channels, mel_bins)).transpose(1, 2)
        return self.video.unpatchify(video_tokens), audio


@dataclass
class LTX2TextEmbeddings:
    """One CFG branch's text conditioning: the outputs of the pipeline's ``LTX2TextConnectors``."""

    video: torch.Tensor  # (B, L, caption_channels) text states for the video stream
    audio: torch.Tensor  # (B, L, caption_channels) text states for the audio stream
    attention_mask: torch.Tensor  # (B, L), 1 where the text is attended


@dataclass
class LTX2Branch:
    """Step-independent state of one guidance branch of one job."""

    tokens: AudioVideoTokens
    video_text: torch.Tensor  # (B, L, dim) after the caption projection
    audio_text: torch.Tensor  # (B, L, audio_dim)
    text_mask: torch.Tensor  # (B, 1, L) additive bias, as diffusers' forward makes it
    video_rope: Rope  # self-attention RoPE of all N_v video tokens
    audio_rope: Rope
    video_cross_rope: Rope  # temporal-only RoPE of the a2v / v2a cross-attentions
    audio_cross_rope: Rope
    perturbed_blocks: frozenset[int] = frozenset()  # STG: blocks whose self-attentions pass values through
    isolate_modalities: bool = False  # modality guidance: no a2v / v2a attention in any block


@dataclass
class AudioVideoKVCache:
    """Per-layer K/V of all N_v video tokens for the two attentions whose keys are video tokens."""

    video_self: TokenKVCache  # (B, heads, N_v, head_dim) per layer
    video_to_audio: TokenKVCache  # (B, audio_heads, N_v, audio_head_dim) per layer

    @property
    def nbytes(self) -> int:
        return self.video_self.nbytes + self.video_to_audio.nbytes


@dataclass
class _ForwardContext:
    """What the swapped processors read during one adapter forward; ``inside`` is False outside of it."""

    inside: bool = False
    video_rows: torch.Tensor | None = None  # the active video tokens; None: all of them
    kv_cache: AudioVideoKVCache | None = None
    counters: dict[str, int] = field(default_factory=lambda: {"video_tokens": 0, "audio_tokens": 0})


def _apply_rope(x: torch.Tensor, rope: Rope, rope_type: str) -> torch.Tensor:
    from diffusers.models.transformers.transformer_ltx2 import apply_interleaved_rotary_emb, apply_split_rotary_emb

    if x.shape[1] == 0:  # no rows to rotate (a step that computes only the audio tokens)
        return x
    return apply_interleaved_rotary_emb(x, rope) if rope_type == "interleaved" else apply_split_rotary_emb(x, rope)


class EmptyQueriesAttnProcessor:
    """diffusers' processor, except for zero queries: a step that computes only LTX-2's audio tokens runs the
    video stream over zero rows, and diffusers' RoPE cannot reshape an empty tensor. Zero queries attend to
    nothing and give zero rows."""

    def __init__(self, original):
        self.original = original

    def __call__(self, attn, hidden_states, *args, **kwargs):
        if hidden_states.shape[1] == 0:
            return hidden_states.new_zeros(*hidden_states.shape[:2], attn.to_out[0].out_features)
        return self.original(attn, hidden_states, *args, **kwargs)


def _gather_rope(rope: Rope, rows: torch.Tensor | None) -> Rope:
    """The RoPE rows of some tokens: axis 1 of interleaved (B, S, D) tables, axis 2 of split (B, H, S, r) ones."""
    if rows is None:
        return rope
    axis = 1 if rope[0].ndim == 3 else 2
    return rope[0].index_select(axis, rows), rope[1].index_select(axis, rows)


class VideoKVCacheAttnProcessor:
    """Attention whose keys and values are made from video tokens, served from a K/V cache of all N_v of them.

    Video self-attention (queries: the active video tokens) and video→audio cross-attention (queries:
    the audio tokens). The arithmetic is diffusers' ``LTX2AudioVideoAttnProcessor``'s: projections, RMS
    norms across heads, RoPE with separate query and key tables, per-head output gates.
    """

    def __init__(self, layer: int, cache_name: str, context: _ForwardContext, original):
        self.layer = layer
        self.cache_name = cache_name  # "video_self" or "video_to_audio"
        self.context = context
        self.original = original  # diffusers' processor, for calls from outside an adapter forward
        self.original_takes_perturbation = type(original).__name__ == "LTX2PerturbedAttnProcessor"

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, query_rotary_emb=None,
                 key_rotary_emb=None, perturbation_mask=None, all_perturbed=None):
        if not self.context.inside:
            extra = dict(perturbation_mask=perturbation_mask, all_perturbed=all_perturbed) \
                if self.original_takes_perturbation else {}
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb,
                                 key_rotary_emb, **extra)
        if all_perturbed:  # STG in this block: each token's value, no attention, so no cached context either
            return self._value_only(attn, hidden_states)
        video = hidden_states if encoder_hidden_states is None else encoder_hidden_states  # (B, a, dim)
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(video))
        value = attn.to_v(video)
        if query_rotary_emb is not None:
            query = _apply_rope(query, query_rotary_emb, attn.rope_type)
            key = _apply_rope(key, key_rotary_emb if key_rotary_emb is not None else query_rotary_emb, attn.rope_type)
        query, key, value = (t.unflatten(2, (attn.heads, -1)).transpose(1, 2) for t in (query, key, value))

        cache = self.context.kv_cache
        if cache is not None:  # (B, H, N_v, hd): fresh rows for the active tokens, cached rows for the rest
            key, value = getattr(cache, self.cache_name).update(self.layer, key, value, self.context.video_rows)
        # without a cache a subset of video tokens only sees itself (the no-KV-sync ablation)

        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)  # (B, H, q, hd)
        out = out.transpose(1, 2)  # (B, q, H, hd)
        if attn.to_gate_logits is not None:  # LTX-2.3 per-head gates; zero logits give gates of 1
            out = out * (2.0 * torch.sigmoid(attn.to_gate_logits(hidden_states))).unsqueeze(-1)
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    @staticmethod
    def _value_only(attn, hidden_states: torch.Tensor) -> torch.Tensor:
        """diffusers' ``LTX2PerturbedAttnProcessor`` with every batch element perturbed: the value projection
        stands in for the attention output; gates and output projection as usual."""
        out = attn.to_v(hidden_states)  # (B, a, H·hd)
        if attn.to_gate_logits is not None:
            gates = 2.0 * torch.sigmoid(attn.to_gate_logits(hidden_states))  # (B, a, H)
            out = (out.unflatten(2, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(2, 3)
        return attn.to_out[1](attn.to_out[0](out))


class LTX2Adapter:
    """``DenoiserAdapter`` over a diffusers ``LTX2VideoTransformer3DModel`` (LTX-2, joint audio and video).

    cross_modal_timestep: the a2v / v2a modulation of the video stream takes the step's σ instead of
        each video token's own (diffusers' ``use_cross_timestep``: True for LTX-2.3 and later, False for
        LTX-2.0). It matters only when conditioning tokens hold σ = 0.
    """

    def __init__(self, transformer, cross_modal_timestep: bool = False):
        config = transformer.config
        self.transformer = transformer.eval()
        self.cross_modal_timestep = cross_modal_timestep
        self.patch = (config.patch_size_t, config.patch_size, config.patch_size)
        self.num_layers = len(transformer.transformer_blocks)
        self.heads, self.head_dim = config.num_attention_heads, config.attention_head_dim
        self.audio_heads, self.audio_head_dim = config.audio_num_attention_heads, config.audio_attention_head_dim
        # per cached video token and layer: its self-attention K/V and its video→audio K/V
        self.width = self.heads * self.head_dim + self.audio_heads * self.audio_head_dim
        self.out_channels = config.out_channels or config.in_channels

        self._context = _ForwardContext()
        for layer, block in enumerate(transformer.transformer_blocks):
            for attention, cache_name in ((block.attn1, "video_self"), (block.video_to_audio_attn, "video_to_audio")):
                original = attention.processor
                if isinstance(original, VideoKVCacheAttnProcessor):  # a second adapter over the same model
                    original = original.original
                attention.set_processor(VideoKVCacheAttnProcessor(layer, cache_name, self._context, original))
            if not isinstance(block.audio_to_video_attn.processor, EmptyQueriesAttnProcessor):  # video queries
                block.audio_to_video_attn.set_processor(EmptyQueriesAttnProcessor(block.audio_to_video_attn.processor))

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.proj_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.proj_in.weight.device

    @property
    def computed_tokens(self) -> dict[str, int]:
        """Video and audio token rows computed so far, over all forwards (instrumentation for tests)."""
        return dict(self._context.counters)

    def token_layout(self, video_shape: tuple[int, ...], audio_shape: tuple[int, ...],
                     frame_rate: float) -> AudioVideoTokens:
        """Validate latent shapes for this model and describe the joint token sequence."""
        video = TokenGrid(tuple(video_shape), self.patch)
        if video.channels != self.out_channels:
            raise GridError(f"video latents have {video.channels} channels but the model expects {self.out_channels}")
        layout = AudioVideoTokens(video, tuple(audio_shape), frame_rate)
        audio_width = self.transformer.config.audio_out_channels or self.transformer.config.audio_in_channels
        if layout.token_dim != audio_width:
            raise GridError(f"audio tokens have {layout.token_dim} numbers but the model expects {audio_width}")
        return layout

    def perturbable_blocks(self, blocks) -> frozenset[int]:
        """Those of ``blocks`` whose self-attentions STG can perturb: blocks that exist, in a model built with
        ``perturbed_attn`` (LTX-2.3's configuration; without it diffusers' blocks ignore the perturbation,
        and its STG forward equals the conditional one)."""
        if not self.transformer.config.perturbed_attn:
            return frozenset()
        return frozenset(block for block in blocks if 0 <= block < self.num_layers)

    @torch.inference_mode()
    def prepare_branch(self, tokens: AudioVideoTokens, text: LTX2TextEmbeddings, perturbed_blocks=(),
                       isolate_modalities: bool = False) -> LTX2Branch:
        """One guidance branch: ``text`` through the model, with the self-attentions of ``perturbed_blocks``
        skipped (STG) and, with ``isolate_modalities``, no audio↔video attention (modality guidance)."""
        model, batch = self.transformer, tokens.batch
        perturbed_blocks = frozenset(perturbed_blocks)
        if perturbed_blocks != self.perturbable_blocks(perturbed_blocks):
            raise ConfigError(f"this LTX-2 model cannot perturb the self-attention of blocks {sorted(perturbed_blocks)}"
                              f": it has {self.num_layers} blocks and perturbed_attn={model.config.perturbed_attn}")
        if text.video.shape[0] != batch:
            raise GridError(f"text embeddings have batch {text.video.shape[0]} but the latents have {batch}")
        video_text, audio_text = text.video.to(self.dtype), text.audio.to(self.dtype)
        if model.config.use_prompt_embeddings:  # LTX-2.0 projects the connectors' states; LTX-2.3 does not
            video_text = model.caption_projection(video_text).view(batch, -1, self.heads * self.head_dim)
            audio_text = model.audio_caption_projection(audio_text).view(batch, -1,
                                                                         self.audio_heads * self.audio_head_dim)
        text_mask = ((1 - text.attention_mask.to(self.dtype)) * -10000.0).unsqueeze(1)  # (B, 1, L)

        _, _, frames, height, width = tokens.video.latent_shape
        video_coords = model.rope.prepare_video_coords(batch, frames, height, width, self.device,
                                                       fps=tokens.frame_rate)
        audio_coords = model.audio_rope.prepare_audio_coords(batch, tokens.num_audio_tokens, self.device)
        return LTX2Branch(
            tokens=tokens,
            video_text=video_text,
            audio_text=audio_text,
            text_mask=text_mask,
            video_rope=model.rope(video_coords, device=self.device),
            audio_rope=model.audio_rope(audio_coords, device=self.device),
            video_cross_rope=model.cross_attn_rope(video_coords[:, 0:1, :], device=self.device),
            audio_cross_rope=model.cross_attn_audio_rope(audio_coords[:, 0:1, :], device=self.device),
            perturbed_blocks=perturbed_blocks,
            isolate_modalities=isolate_modalities,
        )

    def new_kv_cache(self, tokens: AudioVideoTokens, dtype: torch.dtype | None = None,
                     location: CacheLocation = "device") -> AudioVideoKVCache:
        dtype, n = dtype or self.dtype, tokens.num_video_tokens
        return AudioVideoKVCache(
            video_self=TokenKVCache(self.num_layers, tokens.batch, self.heads, n, self.head_dim, dtype, self.device,
                                    location),
            video_to_audio=TokenKVCache(self.num_layers, tokens.batch, self.audio_heads, n, self.audio_head_dim,
                                        dtype, self.device, location),
        )

    def _embed(self, embedding, timestep: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An AdaLN-single embedding of (B,) or (B, a) timesteps.

        Returns the modulation (B, 1 or a, k·dim) and the embedding (B, 1 or a, dim).
        """
        modulation, embedded = embedding(timestep.flatten(), batch_size=batch, hidden_dtype=self.dtype)
        return modulation.view(batch, -1, modulation.size(-1)), embedded.view(batch, -1, embedded.size(-1))

    @torch.inference_mode()
    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        branch: LTX2Branch,
        active: torch.Tensor | None = None,
        kv_cache: AudioVideoKVCache | None = None,
    ) -> torch.Tensor:
        """x: (B, a, D), the active video tokens then all audio tokens; sigma (B,) or per token (B, a)."""
        model, config, tokens = self.transformer, self.transformer.config, branch.tokens
        batch, num_video = x.shape[0], tokens.num_video_tokens
        video_rows = None
        if active is not None:
            count = int((active < num_video).sum())
            video_rows = active[:count]
            if not torch.equal(active[count:], torch.arange(num_video, tokens.num_tokens, device=active.device)):
                raise ConfigError("LTX-2's audio tokens are computed at every step: every token subset must hold "
                                  "all of them (they are the layout's always_active tokens)")
        count = num_video if video_rows is None else video_rows.numel()

        # σ per video token (0 at I2V conditioning tokens); the step's σ is the audio tokens', never frozen
        timestep = sigma.to(torch.float32) * config.timestep_scale_multiplier
        video_timestep = timestep if timestep.ndim == 1 else timestep[:, :count]  # (B,) or (B, a_v)
        step_timestep = timestep if timestep.ndim == 1 else timestep[:, count]  # (B,)

        # 1. Input projections.
        hidden = model.proj_in(x[:, :count].to(self.dtype))  # (B, a_v, dim)
        audio_hidden = model.audio_proj_in(x[:, count:].to(self.dtype))  # (B, N_a, audio_dim)

        # 2. Modulation, as diffusers' forward computes it, for the active rows.
        temb, embedded = self._embed(model.time_embed, video_timestep, batch)
        temb_audio, audio_embedded = self._embed(model.audio_time_embed, step_timestep, batch)
        temb_prompt = temb_prompt_audio = None
        if model.prompt_modulation and config.use_prompt_adaln_single:  # LTX-2.3: σ-dependent text K/V modulation
            temb_prompt, _ = self._embed(model.prompt_adaln, step_timestep, batch)
            temb_prompt_audio, _ = self._embed(model.audio_prompt_adaln, step_timestep, batch)
        gate_factor = config.cross_attn_timestep_scale_multiplier / config.timestep_scale_multiplier
        video_cross_timestep = step_timestep if self.cross_modal_timestep else video_timestep
        video_cross_scale_shift, _ = self._embed(model.av_cross_attn_video_scale_shift, video_cross_timestep, batch)
        video_cross_gate, _ = self._embed(model.av_cross_attn_video_a2v_gate, video_cross_timestep * gate_factor, batch)
        audio_cross_scale_shift, _ = self._embed(model.av_cross_attn_audio_scale_shift, step_timestep, batch)
        audio_cross_gate, _ = self._embed(model.av_cross_attn_audio_v2a_gate, step_timestep * gate_factor, batch)

        # 3. Blocks: diffusers' own, with RoPE gathered at the active video tokens' coordinates.
        context = self._context
        context.inside, context.video_rows, context.kv_cache = True, video_rows, kv_cache
        context.counters["video_tokens"] += count
        context.counters["audio_tokens"] += tokens.num_audio_tokens
        try:
            for index, block in enumerate(model.transformer_blocks):
                # diffusers' STG forward: the whole batch perturbed (no per-sample perturbation mask)
                perturbed = index in branch.perturbed_blocks
                hidden, audio_hidden = block(
                    hidden_states=hidden,
                    audio_hidden_states=audio_hidden,
                    encoder_hidden_states=branch.video_text,
                    audio_encoder_hidden_states=branch.audio_text,
                    temb=temb,
                    temb_audio=temb_audio,
                    temb_ca_scale_shift=video_cross_scale_shift,
                    temb_ca_audio_scale_shift=audio_cross_scale_shift,
                    temb_ca_gate=video_cross_gate,
                    temb_ca_audio_gate=audio_cross_gate,
                    temb_prompt=temb_prompt,
                    temb_prompt_audio=temb_prompt_audio,
                    video_rotary_emb=_gather_rope(branch.video_rope, video_rows),
                    audio_rotary_emb=branch.audio_rope,
                    ca_video_rotary_emb=_gather_rope(branch.video_cross_rope, video_rows),
                    ca_audio_rotary_emb=branch.audio_cross_rope,
                    encoder_attention_mask=branch.text_mask,
                    audio_encoder_attention_mask=branch.text_mask,
                    use_a2v_cross_attention=not branch.isolate_modalities,
                    use_v2a_cross_attention=not branch.isolate_modalities,
                    all_perturbed=perturbed,
                )
        finally:
            context.inside, context.video_rows, context.kv_cache = False, None, None

        # 4. Output norms and projections.
        shift, scale = (model.scale_shift_table[None, None] + embedded[:, :, None]).unbind(2)
        video_velocity = model.proj_out(model.norm_out(hidden) * (1 + scale) + shift)  # (B, a_v, D)
        audio_shift, audio_scale = (model.audio_scale_shift_table[None, None] + audio_embedded[:, :, None]).unbind(2)
        audio_velocity = model.audio_proj_out(model.audio_norm_out(audio_hidden) * (1 + audio_scale) + audio_shift)
        return torch.cat([video_velocity, audio_velocity], dim=1)
