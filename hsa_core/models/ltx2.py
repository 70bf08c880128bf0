"""LTX-2 end to end: diffusers' text stack, VAEs, vocoder and conditioning, hsa_core's denoising loop.

``LTX2VideoModel`` wraps a loaded diffusers ``LTX2Pipeline`` (or ``LTX2ImageToVideoPipeline``) and
uses the pipeline's own helpers around the loop — ``encode_prompt`` (Gemma 3), the text
``connectors``, ``prepare_latents`` / ``prepare_audio_latents`` (noise from the seed, the I2V image
latent and conditioning mask), the checkpoint's scheduler for the σ's, the VAEs and the vocoder — so
conditioning is exactly diffusers'. The loop is an hsa_core sampler over ``LTX2Adapter`` tokens: the
video tokens, then the audio tokens, which are computed at every step.

Guidance is diffusers' LTX-2 guidance, each term with a video and an audio scale (per token):

    v̂ = v_u + w·(v_c − v_u) + s·(v_c − v_stg) + (m − 1)·(v_c − v_iso)

classifier-free guidance (negative prompt, v_u), spatio-temporal guidance (the self-attentions of
some blocks skipped, v_stg) and modality-isolation guidance (no audio↔video attention, v_iso), each
a transformer forward of its own; then guidance rescaling, per stream, in x̂₀ space
(``GuidanceRescale``). diffusers combines the terms in x̂₀ = x − σ·v, where they are the same linear
combination. A model without ``perturbed_attn`` (LTX-2.0) ignores the STG perturbation, so there
diffusers' STG forward repeats the conditional one and its term is zero: it is not run here.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters.ltx2 import AudioVideoTokens, LTX2Adapter, LTX2TextEmbeddings
from ..errors import ConfigError, ModelNotFoundError
from ..memory import KVCacheEstimate, check_kv_cache_fits, decode_without_losing_latents
from ..samplers.base import Conditioning, GuidanceRescale, GuidanceTerm, Sampler, SampleResult, StepCallback
from ..samplers.hsa import HSAConfig, HSASampler
from ..schedule import SigmaSchedule
from .base import CheckpointModel, DecodedClip, TokenCounts
from .registry import AudioVideoGuidance, ModelSpec

# diffusers' LTX-2 pipelines pad or cut prompts to this many text tokens.
MAX_TEXT_TOKENS = 1024


@dataclass
class LTX2Job:
    """Everything one generation needs between encoding and decoding."""

    layout: AudioVideoTokens
    tokens: torch.Tensor  # (1, N_v + N_a, D) initial tokens: noise, and the clean first frame under I2V
    frozen: torch.Tensor | None  # (N,) bool: the I2V image's tokens, held clean
    conditioning: Conditioning
    schedule: SigmaSchedule
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved request, for reports


@dataclass
class GeneratedAudioVideo:
    frames: np.ndarray  # (F, H, W, 3) float in [0, 1]
    fps: int
    audio: np.ndarray  # (channels, samples) float waveform
    sample_rate: int
    latents: torch.Tensor  # (1, C, F, H, W) final video latents, denormalised as diffusers returns them
    audio_latents: torch.Tensor  # (1, C_a, L, M) final audio latents, denormalised
    result: SampleResult
    decoded_with: str  # how the video VAE ran: "device", "tiled" or "cpu"


class LTX2VideoModel(CheckpointModel):
    """An LTX-2 checkpoint loaded through diffusers, sampled by hsa_core."""

    max_text_tokens = MAX_TEXT_TOKENS
    example_frames = 121

    def __init__(self, pipeline, spec: ModelSpec, text_encoder: str = "device"):
        for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
            if getattr(pipeline, name, None) is None:
                raise ModelNotFoundError(f"the {spec.name} checkpoint has no {name}")
        super().__init__(pipeline, spec, text_encoder)
        self.adapter = LTX2Adapter(pipeline.transformer, cross_modal_timestep=spec.cross_modal_timestep)
        self._image_pipeline = None

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.dtype

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's spatial factor × the patch size, and of 32,
        which diffusers' LTX-2 pipelines require (the released VAE compresses 32×)."""
        return math.lcm(32, self.pipeline.vae_spatial_compression_ratio * self.adapter.patch[1])

    @property
    def frame_stride(self) -> int:
        """num_frames − 1 must be a multiple of this: the VAE's temporal factor."""
        return self.pipeline.vae_temporal_compression_ratio

    @property
    def sample_rate(self) -> int:
        return self.pipeline.vocoder.config.output_sampling_rate

    @property
    def image_pipeline(self):
        """An LTX2ImageToVideoPipeline over the same components (the checkpoint ships as LTX2Pipeline)."""
        from diffusers import LTX2ImageToVideoPipeline

        if isinstance(self.pipeline, LTX2ImageToVideoPipeline):
            return self.pipeline
        if self._image_pipeline is None:
            self._image_pipeline = LTX2ImageToVideoPipeline(**self.pipeline.components)
        return self._image_pipeline

    def layout(self, height: int, width: int, num_frames: int, frame_rate: int | None = None) -> AudioVideoTokens:
        """The video and audio tokens of ``num_frames`` frames of height × width at ``frame_rate``: the
        soundtrack covers the clip's duration at the audio VAE's latent rate."""
        pipe = self.pipeline
        duration = num_frames / (frame_rate or self.spec.fps)
        audio_frames = round(duration * (pipe.audio_sampling_rate / pipe.audio_hop_length
                                         / float(pipe.audio_vae_temporal_compression_ratio)))
        latent_shape = (1, pipe.transformer.config.in_channels, (num_frames - 1) // self.frame_stride + 1,
                        height // pipe.vae_spatial_compression_ratio, width // pipe.vae_spatial_compression_ratio)
        mel_bins = pipe.audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
        return self.adapter.token_layout(latent_shape, (1, pipe.audio_vae.config.latent_channels, audio_frames,
                                                        mel_bins), frame_rate or self.spec.fps)

    def token_counts(self, height: int, width: int, num_frames: int) -> TokenCounts:
        layout = self.layout(height, width, num_frames)
        latent_frames = (num_frames - 1) // self.frame_stride + 1
        return TokenCounts(layout.num_tokens, first_frame_frozen=layout.num_video_tokens // latent_frames,
                           always_active=layout.num_audio_tokens)

    def min_budget(self, steps: int, height: int, width: int, num_frames: int, with_image: bool,
                   config: HSAConfig | None = None) -> float:
        """The smallest HSA budget a job of this shape and step count can run at (the audio tokens are
        computed at every step, an image's latent frame is held clean)."""
        config, counts = config or HSAConfig(), self.token_counts(height, width, num_frames)
        return config.min_budget(steps, counts.tokens, frozen_tokens=counts.first_frame_frozen if with_image else 0,
                                 always_active_tokens=counts.always_active)

    def kv_cache_estimate_for(self, height: int, width: int, num_frames: int,
                              config: HSAConfig | None = None) -> KVCacheEstimate:
        """The K/V cache HSA keeps below budget 1 at this shape with the preset's guidance."""
        layout = self.layout(height, width, num_frames)
        guidance = self._audio_video_guidance()
        audio_guidance = _first_given(self.spec.audio_guidance_scale, self.spec.guidance_scale)
        branches = 1 + int(self.spec.guidance_scale > 1 or audio_guidance > 1) + len(self._guidance_terms(layout,
                                                                                                          guidance))
        return self._kv_estimate(layout.num_video_tokens, config or HSAConfig(), branches)

    def working_bytes_for(self, height: int, width: int, num_frames: int) -> int:
        return self._working_bytes(self.layout(height, width, num_frames).num_video_tokens)

    def _kv_estimate(self, video_tokens: int, config: HSAConfig, branches: int) -> KVCacheEstimate:
        return KVCacheEstimate(layers=self.adapter.num_layers, tokens=video_tokens, width=self.adapter.width,
                               dtype=config.cache_dtype or self.adapter.dtype, branches=branches,
                               forecast_layers=config.kv_forecast_layers)

    def _working_bytes(self, video_tokens: int) -> int:
        """Transient memory of one forward, estimated by its largest activation (the video FFN's hidden layer)."""
        element = torch.empty((), dtype=self.adapter.dtype).element_size()
        return 2 * video_tokens * 4 * self.adapter.heads * self.adapter.head_dim * element

    def _audio_video_guidance(self, stg_scale=None, audio_stg_scale=None, stg_blocks=None, modality_scale=None,
                              audio_modality_scale=None, guidance_rescale=None,
                              audio_guidance_rescale=None) -> AudioVideoGuidance:
        """The request's guidance terms, the preset filling what is None (an audio value falls back to the
        preset's audio value, then to the video value)."""
        preset = self.spec.audio_video_guidance or AudioVideoGuidance()
        stg = _first_given(stg_scale, preset.stg_scale)
        modality = _first_given(modality_scale, preset.modality_scale)
        rescale = _first_given(guidance_rescale, preset.guidance_rescale)
        return AudioVideoGuidance(
            stg_scale=stg, audio_stg_scale=_first_given(audio_stg_scale, preset.audio_stg_scale, stg),
            stg_blocks=tuple(preset.stg_blocks if stg_blocks is None else stg_blocks),
            modality_scale=modality,
            audio_modality_scale=_first_given(audio_modality_scale, preset.audio_modality_scale, modality),
            guidance_rescale=rescale,
            audio_guidance_rescale=_first_given(audio_guidance_rescale, preset.audio_guidance_rescale, rescale))

    def schedule(self, steps: int, num_video_tokens: int, shift: float | None = None) -> tuple[SigmaSchedule, float]:
        """The checkpoint scheduler's σ's for ``steps`` Euler steps, as diffusers' pipeline sets them.

        The scheduler shifts by μ from the number of video tokens (``calculate_shift``); ``shift``
        replaces that with μ = ln(shift) (the exponential time shift with μ is the plain shift
        s = e^μ). Returns the schedule and the shift it used.
        """
        from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

        config = self.pipeline.scheduler.config
        scheduler = copy.deepcopy(self.pipeline.scheduler)
        if not config.use_dynamic_shifting and shift is not None:
            scheduler = type(scheduler).from_config(config, shift=shift)
        mu = math.log(shift) if shift is not None else calculate_shift(
            num_video_tokens, config.get("base_image_seq_len", 1024), config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.95), config.get("max_shift", 2.05))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        used_shift = math.exp(mu) if config.use_dynamic_shifting else scheduler.config.shift
        return SigmaSchedule(tuple(scheduler.sigmas.tolist()), config.num_train_timesteps), used_shift

    def encode_text(self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor) -> LTX2TextEmbeddings:
        """Stacked Gemma hidden states (B, L, C·layers) → the connectors' video and audio text states."""
        pipe = self.pipeline
        padding_side = getattr(pipe.tokenizer, "padding_side", "left") if pipe.tokenizer is not None else "left"
        video, audio, mask = pipe.connectors(prompt_embeds, attention_mask, padding_side=padding_side)
        return LTX2TextEmbeddings(video, audio, mask)

    @torch.inference_mode()
    def prepare(
        self,
        prompt: str | None = None,
        *,
        negative_prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        image=None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        frame_rate: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        audio_guidance_scale: float | None = None,
        stg_scale: float | None = None,
        audio_stg_scale: float | None = None,
        stg_blocks: tuple[int, ...] | list[int] | None = None,
        modality_scale: float | None = None,
        audio_modality_scale: float | None = None,
        guidance_rescale: float | None = None,
        audio_guidance_rescale: float | None = None,
        seed: int = 0,
    ) -> LTX2Job:
        """Encode the prompt (and image), draw the noise from ``seed``; preset values fill what is None.

        ``prompt_embeds`` are the stacked text-encoder hidden states diffusers' ``encode_prompt``
        returns, with their ``prompt_attention_mask``. ``image`` (a PIL image) conditions the first frame.
        The guidance arguments are diffusers' (``AudioVideoGuidance``); an ``audio_*`` None takes the
        preset's audio value, then the video value (an explicit 0 stays 0, where diffusers' ``or`` would
        replace it with the video value).
        """
        spec, pipe = self.spec, self.pipeline
        height, width = height or spec.height, width or spec.width
        num_frames, frame_rate = num_frames or spec.num_frames, frame_rate or spec.fps
        self.check_shape(height, width, num_frames)
        guidance = spec.guidance_scale if guidance_scale is None else guidance_scale
        audio_guidance = _first_given(audio_guidance_scale, spec.audio_guidance_scale, guidance)
        use_cfg = guidance > 1.0 or audio_guidance > 1.0  # diffusers' rule
        av_guidance = self._audio_video_guidance(stg_scale, audio_stg_scale, stg_blocks, modality_scale,
                                                 audio_modality_scale, guidance_rescale, audio_guidance_rescale)
        if (av_guidance.stg_scale > 0 or av_guidance.audio_stg_scale > 0) and not av_guidance.stg_blocks:
            raise ConfigError("spatio-temporal guidance (stg_scale > 0) needs the blocks to perturb: stg_blocks")
        device = self.device

        encodes = prompt_embeds is None or (use_cfg and negative_prompt_embeds is None)
        with self.text_encoding() if encodes else nullcontext(device) as encode_device:
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = \
                pipe.encode_prompt(
                    prompt=prompt if prompt_embeds is None else None,
                    negative_prompt=negative_prompt,
                    do_classifier_free_guidance=use_cfg,
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_prompt_embeds,
                    prompt_attention_mask=prompt_attention_mask,
                    negative_prompt_attention_mask=negative_prompt_attention_mask,
                    max_sequence_length=MAX_TEXT_TOKENS,
                    device=encode_device,
                )
        text = self.encode_text(prompt_embeds.to(device), prompt_attention_mask.to(device))
        negative_text = self.encode_text(negative_prompt_embeds.to(device), negative_prompt_attention_mask.to(device)) \
            if use_cfg else None

        # noise in diffusers' order: video first, then audio, from one generator
        generator = torch.Generator("cpu").manual_seed(seed)
        channels = pipe.transformer.config.in_channels
        frozen_mask = None
        if image is None:
            video = pipe.prepare_latents(1, channels, height, width, num_frames, 0.0, torch.float32, device, generator)
        else:
            video, frozen_mask = self.image_pipeline.prepare_latents(
                self._preprocess_image(image, height, width), 1, channels, height, width, num_frames, 0.0,
                torch.float32, device, generator)
        layout = self.layout(height, width, num_frames, frame_rate)
        audio = pipe.prepare_audio_latents(1, pipe.audio_vae.config.latent_channels, layout.audio_shape[2],
                                           pipe.audio_vae.config.mel_bins, 0.0, torch.float32, device, generator)
        frozen = None
        if frozen_mask is not None:  # the conditioning mask marks the image's latent frame
            frozen = torch.cat([frozen_mask[0].bool().cpu(), torch.zeros(layout.num_audio_tokens, dtype=torch.bool)])
        scale: float | torch.Tensor = 1.0
        if use_cfg:
            scale = _per_stream(layout, guidance, audio_guidance)
        conditioning = Conditioning(text, negative_text, scale,
                                    extra_guidance=self._guidance_terms(layout, av_guidance),
                                    guidance_rescale=_guidance_rescale(layout, av_guidance))
        schedule, used_shift = self.schedule(steps or spec.steps, layout.num_video_tokens, shift)
        return LTX2Job(
            layout=layout,
            tokens=torch.cat([video, audio], dim=1),  # both packed as diffusers packs them
            frozen=frozen,
            conditioning=conditioning,
            schedule=schedule,
            settings=dict(height=height, width=width, num_frames=num_frames, frame_rate=frame_rate,
                          steps=schedule.steps, shift=used_shift, guidance_scale=guidance,
                          audio_guidance_scale=audio_guidance, **asdict(av_guidance),
                          transformer_passes_per_step=conditioning.num_branches, seed=seed),
        )

    def _guidance_terms(self, layout: AudioVideoTokens, guidance: AudioVideoGuidance) -> tuple[GuidanceTerm, ...]:
        """The guidance branches besides CFG that diffusers runs for these settings (its rules: STG when a
        scale is > 0, modality guidance when a scale is > 1), less an STG the model cannot perturb."""
        terms = []
        if guidance.stg_scale > 0 or guidance.audio_stg_scale > 0:
            perturbed = self.adapter.perturbable_blocks(guidance.stg_blocks)
            if perturbed:  # else diffusers' STG forward is the conditional one again and its term is 0
                terms.append(GuidanceTerm("spatio-temporal", _per_stream(layout, guidance.stg_scale,
                                                                         guidance.audio_stg_scale),
                                          {"perturbed_blocks": perturbed}))
        if guidance.modality_scale > 1 or guidance.audio_modality_scale > 1:
            terms.append(GuidanceTerm("modality isolation", _per_stream(layout, guidance.modality_scale - 1,
                                                                        guidance.audio_modality_scale - 1),
                                      {"isolate_modalities": True}))
        return tuple(terms)

    def _preprocess_image(self, image, height: int, width: int) -> torch.Tensor:
        """diffusers' I2V preprocessing: H.264 re-compression at the checkpoint's CRF, resize, normalise."""
        import PIL.Image
        from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf, resolve_default_image_crf

        crf = resolve_default_image_crf(self.pipeline.text_encoder)
        if crf != 0:
            image = PIL.Image.fromarray(apply_image_conditioning_crf(np.array(image.convert("RGB")), crf))
        pixels = self.pipeline.video_processor.preprocess(image, height=height, width=width)
        return pixels.to(self.device, torch.float32)

    def kv_cache_estimate(self, job: LTX2Job, sampler: Sampler) -> KVCacheEstimate | None:
        """The K/V cache ``sampler`` will allocate for ``job``; None if none.

        Only video tokens are cached (audio tokens are computed at every step); per video token and
        layer the cache holds its self-attention K/V and its video→audio K/V (``adapter.width``), once
        per guidance branch.
        """
        if not isinstance(sampler, HSASampler) or sampler.budget >= 1 or not sampler.config.kv_sync:
            return None
        return self._kv_estimate(job.layout.num_video_tokens, sampler.config, job.conditioning.num_branches)

    def forward_working_bytes(self, job: LTX2Job) -> int:
        return self._working_bytes(job.layout.num_video_tokens)

    def denoising_inputs(self, job: LTX2Job) -> tuple[LTX2Adapter, AudioVideoTokens, Conditioning]:
        """The adapter, the token layout and the conditioning: what one forward of ``job`` takes."""
        return self.adapter, job.layout, job.conditioning

    def denoise(self, job: LTX2Job, sampler: Sampler, callback: StepCallback | None = None,
                free_bytes: int | None = None) -> SampleResult:
        """Run the sampler; first refuse, with the numbers, a K/V cache the device cannot hold."""
        estimate = self.kv_cache_estimate(job, sampler)
        if estimate is not None:
            check_kv_cache_fits(estimate, self.forward_working_bytes(job), self.device, free_bytes,
                                sampler.config.kv_cache_location)
        return sampler.sample(self.adapter, job.tokens, job.layout, job.conditioning, job.schedule,
                              frozen=job.frozen, callback=callback)

    def latents(self, job: LTX2Job, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final tokens → video (1, C, F, H, W) and audio (1, C_a, L, M) latents, denormalised as diffusers'
        ``output_type="latent"`` returns them (and as the VAEs decode them)."""
        pipe, num_video = self.pipeline, job.layout.num_video_tokens
        # the audio statistics are per packed channel (C_a·M), so they apply before unpacking
        audio_tokens = pipe._denormalize_audio_latents(tokens[:, num_video:], pipe.audio_vae.latents_mean,
                                                       pipe.audio_vae.latents_std)
        video, audio = job.layout.unpack(torch.cat([tokens[:, :num_video], audio_tokens], dim=1))
        video = pipe._denormalize_latents(video, pipe.vae.latents_mean, pipe.vae.latents_std,
                                          pipe.vae.config.scaling_factor)
        return video, audio

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, audio_latents: torch.Tensor,
               on_fallback=None) -> tuple[np.ndarray, np.ndarray, str]:
        """Denormalised latents → (F, H, W, 3) frames in [0, 1] and a (channels, samples) waveform.

        Each VAE retries tiled, then on the CPU, on out-of-memory; the latents are never lost.
        """
        pipe = self.pipeline
        vae, audio_vae, vocoder = pipe.vae, pipe.audio_vae, pipe.vocoder

        def decode_video() -> np.ndarray:
            parameter = next(vae.parameters())
            # decode_timestep 0, diffusers' default: timestep-conditioned VAEs get t = 0 and no added noise
            timestep = torch.zeros(1, device=parameter.device) if vae.config.timestep_conditioning else None
            video = vae.decode(latents.to(parameter.device, parameter.dtype), timestep, return_dict=False)[0]
            return pipe.video_processor.postprocess_video(video, output_type="np")[0]

        def decode_audio() -> np.ndarray:
            parameter = next(audio_vae.parameters())
            mel = audio_vae.decode(audio_latents.to(parameter.device, parameter.dtype), return_dict=False)[0]
            vocoder_parameter = next(vocoder.parameters())
            waveform = vocoder(mel.to(vocoder_parameter.device, vocoder_parameter.dtype))  # (1, channels, samples)
            return waveform[0].float().cpu().numpy()

        frames, decoded_with = decode_without_losing_latents(vae, decode_video, on_fallback)
        audio, _ = decode_without_losing_latents(audio_vae, decode_audio, on_fallback)
        return frames, audio, decoded_with

    def decode_tokens(self, job: LTX2Job, tokens: torch.Tensor, on_fallback=None) -> DecodedClip:
        """Sampled tokens of ``job`` → the clip and its soundtrack, decoded as ``decode`` does."""
        frames, audio, decoded_with = self.decode(*self.latents(job, tokens), on_fallback)
        return DecodedClip(frames, job.settings["frame_rate"], decoded_with, audio, self.sample_rate)

    def latents_bytes(self, job: LTX2Job, tokens: torch.Tensor) -> bytes:
        """``{"video", "audio"}`` latents of sampled tokens as ``torch.save`` bytes (kept when decoding fails)."""
        return self.serialised(dict(zip(("video", "audio"), self.latents(job, tokens))))

    def generate(self, prompt: str, sampler: Sampler, callback: StepCallback | None = None,
                 on_decode_fallback=None, **request: Any) -> GeneratedAudioVideo:
        """prepare → denoise → decode; call the three yourself to keep the latents if decoding fails."""
        job = self.prepare(prompt, **request)
        result = self.denoise(job, sampler, callback)
        latents, audio_latents = self.latents(job, result.tokens)
        frames, audio, decoded_with = self.decode(latents, audio_latents, on_decode_fallback)
        return GeneratedAudioVideo(frames, job.settings["frame_rate"], audio, self.sample_rate, latents,
                                   audio_latents, result, decoded_with)


def _first_given(*values):
    """The first value that is not None."""
    return next(value for value in values if value is not None)


def _per_stream(layout: AudioVideoTokens, video_value: float, audio_value: float) -> torch.Tensor:
    """(N,) per-token values: ``video_value`` on the video tokens, ``audio_value`` on the audio tokens."""
    return torch.where(layout.always_active, audio_value, video_value).to(torch.float32)


def _guidance_rescale(layout: AudioVideoTokens, guidance: AudioVideoGuidance) -> GuidanceRescale | None:
    """diffusers rescales each stream on its own: the video tokens are group 0, the audio tokens group 1."""
    if guidance.guidance_rescale <= 0 and guidance.audio_guidance_rescale <= 0:
        return None
    return GuidanceRescale((guidance.guidance_rescale, guidance.audio_guidance_rescale),
                           layout.always_active.long())
