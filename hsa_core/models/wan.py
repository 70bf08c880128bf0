"""Wan 2.1 / 2.2 end to end: diffusers' text encoder, VAE and conditioning, hsa_core's denoising loop.

``WanVideoModel`` wraps a loaded diffusers ``WanPipeline`` or ``WanImageToVideoPipeline`` and uses
the pipeline's own helpers for everything around the loop — ``encode_prompt``, ``encode_image``
(CLIP), ``prepare_latents`` (noise from the seed, the I2V condition) and the VAE — so conditioning
is exactly diffusers'. The loop is an hsa_core sampler over ``WanAdapter`` tokens:

* Wan 2.1 T2V, Wan 2.2 TI2V without an image: one expert, noise only.
* Wan 2.1 I2V / Wan 2.2 I2V A14B: the mask + image latents ride along as a per-token condition
  (``Conditioning.model_inputs["condition"]``), Wan 2.1 also with the CLIP image embedding.
* Wan 2.2 TI2V with an image (``expand_timesteps``): the image latent is the first latent frame,
  frozen at σ = 0 (per-token timesteps) and never stepped.
* Wan 2.2 A14B: two experts split at the checkpoint's ``boundary_ratio`` (``samplers/experts.py``),
  ``guidance_scale`` above it and ``guidance_scale_2`` below; with ``expert_offload`` the expert not
  sampling waits on the CPU, so only one is on the device at a time.
* First-last-frame (Wan 2.1 FLF2V, any channel-conditioned I2V checkpoint): diffusers' ``last_image``,
  the last frame's latents in the condition beside the first's, both images in the CLIP context.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters.base import TokenGrid
from ..adapters.wan import WanAdapter
from ..errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from ..memory import KVCacheEstimate, check_kv_cache_fits, decode_without_losing_latents
from ..samplers.base import Conditioning, Sampler, SampleResult, StepCallback
from ..samplers.experts import Expert, chain_min_budget, expert_switch_step, sample_with_experts
from ..samplers.hsa import HSAConfig, HSASampler
from ..schedule import FlowMatchSchedule
from .base import CheckpointModel, DecodedClip, TokenCounts
from .registry import ModelSpec

# diffusers' Wan pipelines pad or cut prompts to this many text tokens.
MAX_TEXT_TOKENS = 512


@dataclass
class WanJob:
    """Everything one generation needs between encoding and decoding."""

    grid: TokenGrid
    tokens: torch.Tensor  # (1, N, D) initial tokens: noise, and the clean first frame under TI2V I2V
    frozen: torch.Tensor | None  # (N,) bool: tokens held clean (TI2V first frame)
    experts: list[Expert]
    switch_steps: list[int]  # first step of each expert after the first
    schedule: FlowMatchSchedule
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved request, for reports


@dataclass
class GeneratedVideo:
    frames: np.ndarray  # (F, H, W, 3) float in [0, 1]
    fps: int
    latents: torch.Tensor  # (1, C, F, H, W) final latents
    result: SampleResult
    decoded_with: str  # "device", "tiled" or "cpu"


class WanVideoModel(CheckpointModel):
    """A Wan checkpoint loaded through diffusers, sampled by hsa_core."""

    max_text_tokens = MAX_TEXT_TOKENS
    example_frames = 81

    def __init__(self, pipeline, spec: ModelSpec, text_encoder: str = "device", expert_offload: bool = False):
        transformer, transformer_2 = pipeline.transformer, getattr(pipeline, "transformer_2", None)
        if transformer is None:
            raise ModelNotFoundError(f"the {spec.name} checkpoint has no transformer")
        if spec.experts == 2 and transformer_2 is None:
            raise ModelNotFoundError(
                f"{spec.name} is a two-expert model, but the checkpoint has no transformer_2 (the low-noise expert)"
            )
        condition_channels = transformer.config.in_channels - (transformer.config.out_channels or 0)
        if spec.task == "i2v" and condition_channels <= 0:
            raise UnsupportedModelError(
                f"{spec.name} is image-to-video, but this transformer takes no condition channels "
                f"(in_channels {transformer.config.in_channels}): is it a text-to-video checkpoint?"
            )
        if transformer.config.image_dim is not None and getattr(pipeline, "image_encoder", None) is None:
            raise ModelNotFoundError(f"the {spec.name} checkpoint needs an image_encoder (CLIP) and has none")
        super().__init__(pipeline, spec, text_encoder)
        self.expert_offload = expert_offload and spec.experts == 2
        self.adapters = [WanAdapter(transformer)]
        self._device = self.adapters[0].device
        if spec.experts == 2:
            self.adapters.append(WanAdapter(transformer_2))
        self.boundary_ratio = pipeline.config.get("boundary_ratio") or spec.boundary_ratio
        self.expand_timesteps = bool(pipeline.config.get("expand_timesteps", False))
        self._image_pipeline = None

    @property
    def device(self) -> torch.device:
        """Where the transformers compute (the expert waiting on the CPU under expert offload moves here)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self.adapters[0].dtype

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's spatial factor × the patch size."""
        return self.pipeline.vae_scale_factor_spatial * self.adapters[0].patch[1]

    @property
    def frame_stride(self) -> int:
        """num_frames − 1 must be a multiple of this: the VAE's temporal factor."""
        return self.pipeline.vae_scale_factor_temporal

    @property
    def image_pipeline(self):
        """A WanImageToVideoPipeline over the same components (TI2V checkpoints ship as WanPipeline)."""
        from diffusers import WanImageToVideoPipeline

        if isinstance(self.pipeline, WanImageToVideoPipeline):
            return self.pipeline
        if self._image_pipeline is None:
            self._image_pipeline = WanImageToVideoPipeline(
                **self.pipeline.components,
                boundary_ratio=self.pipeline.config.get("boundary_ratio"),
                expand_timesteps=self.expand_timesteps,
            )
        return self._image_pipeline

    def latent_shape(self, height: int, width: int, num_frames: int) -> tuple[int, int, int, int, int]:
        """The (1, C, F, H, W) latents of ``num_frames`` frames of height × width."""
        return (1, self.adapters[0].out_channels, (num_frames - 1) // self.frame_stride + 1,
                height // self.pipeline.vae_scale_factor_spatial, width // self.pipeline.vae_scale_factor_spatial)

    def token_counts(self, height: int, width: int, num_frames: int) -> TokenCounts:
        grid = self.adapters[0].token_grid(self.latent_shape(height, width, num_frames))
        frozen = int(grid.frame_mask([0]).sum()) if self.expand_timesteps else 0
        return TokenCounts(grid.num_tokens, first_frame_frozen=frozen)

    def min_budget(self, steps: int, height: int, width: int, num_frames: int, with_image: bool,
                   config: HSAConfig | None = None) -> float:
        """The smallest HSA budget a job of this shape and step count can run at with the preset's schedule:
        a two-expert model's spans each need their caching window (a short span costs its whole share)."""
        config, counts = config or HSAConfig(), self.token_counts(height, width, num_frames)
        frozen = counts.first_frame_frozen if with_image else 0
        spans = [steps]
        if len(self.adapters) == 2:
            switch = expert_switch_step(FlowMatchSchedule(steps, self.spec.shift), self.boundary_ratio)
            spans = [span for span in (switch, steps - switch) if span]
        return chain_min_budget(config, spans, counts.tokens, frozen)

    def kv_cache_estimate_for(self, height: int, width: int, num_frames: int,
                              config: HSAConfig | None = None) -> KVCacheEstimate:
        """The K/V cache HSA keeps below budget 1 at this shape with the preset's guidance."""
        return self._kv_estimate(self.token_counts(height, width, num_frames).tokens, config or HSAConfig(),
                                 branches=2 if self.spec.guidance_scale > 1 else 1)

    def working_bytes_for(self, height: int, width: int, num_frames: int) -> int:
        return self._working_bytes(self.token_counts(height, width, num_frames).tokens)

    def _kv_estimate(self, tokens: int, config: HSAConfig, branches: int) -> KVCacheEstimate:
        adapter = self.adapters[0]
        return KVCacheEstimate(layers=adapter.num_layers, tokens=tokens, width=adapter.width,
                               dtype=config.cache_dtype or adapter.dtype, branches=branches,
                               forecast_layers=config.kv_forecast_layers)

    def _working_bytes(self, tokens: int) -> int:
        """Transient memory of one forward, estimated by its largest activation (the FFN's hidden layer)."""
        adapter = self.adapters[0]
        element = torch.empty((), dtype=adapter.dtype).element_size()
        return 2 * tokens * adapter.transformer.config.ffn_dim * element

    @torch.inference_mode()
    def prepare(
        self,
        prompt: str | None = None,
        *,
        negative_prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image=None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        seed: int = 0,
        latents: torch.Tensor | None = None,
        last_image=None,
    ) -> WanJob:
        """Encode the prompt (and image), draw the noise from ``seed``; preset values fill what is None.

        ``image`` is a PIL image (or anything diffusers' video processor takes); ``last_image`` the last
        frame of a first-last-frame request (channel-conditioned I2V checkpoints). ``latents`` replaces
        the seeded noise, as in diffusers.
        """
        spec, pipe = self.spec, self.pipeline
        if spec.needs_image and image is None:
            raise ConfigError(f"{spec.name} is image-to-video: it needs an image")
        if image is not None and not spec.takes_image:
            raise ConfigError(f"{spec.name} is text-to-video: it takes no image")
        if last_image is not None and (image is None or spec.task != "i2v"):
            raise ConfigError(f"{spec.name}: a last frame needs a first frame and an image-to-video checkpoint "
                              "that conditions through channels (Wan 2.1 / 2.2 I2V, FLF2V)")
        if self.adapters[0].image_dim is not None:  # the CLIP context holds as many frames as it was trained on
            two_frames = self.adapters[0].transformer.config.pos_embed_seq_len is not None
            if last_image is not None and not two_frames:
                raise ConfigError(f"{spec.name}: this checkpoint's CLIP image context takes one frame (its transformer "
                                  "has no pos_embed_seq_len): it is not a first-last-frame model")
            if image is not None and last_image is None and two_frames:
                raise ConfigError(f"{spec.name} is first-last-frame: its CLIP image context takes a first and a last "
                                  "frame; pass last_image too")
        height, width = height or spec.height, width or spec.width
        num_frames = num_frames or spec.num_frames
        self.check_shape(height, width, num_frames)
        guidance = spec.guidance_scale if guidance_scale is None else guidance_scale
        guidance_2 = next(g for g in (guidance_scale_2, spec.guidance_scale_2, guidance) if g is not None)
        schedule = FlowMatchSchedule(steps or spec.steps, spec.shift if shift is None else shift)
        device = self.device

        # diffusers decides CFG on the first scale alone, for both experts
        use_cfg = guidance > 1.0
        encodes = prompt_embeds is None or (use_cfg and negative_prompt_embeds is None)
        with self.text_encoding() if encodes else nullcontext(device) as encode_device:
            prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
                prompt=prompt if prompt_embeds is None else None,
                negative_prompt=negative_prompt,
                do_classifier_free_guidance=use_cfg,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                max_sequence_length=MAX_TEXT_TOKENS,
                device=encode_device,
            )
        prompt_embeds = prompt_embeds.to(device)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(device)
        generator = torch.Generator("cpu").manual_seed(seed)
        model_inputs: dict[str, torch.Tensor] = {}
        frozen_first_frame = False
        if image is None:
            noise = pipe.prepare_latents(1, self.adapters[0].out_channels, height, width, num_frames,
                                         torch.float32, device, generator, latents)
        else:
            i2v = self.image_pipeline
            pixels = i2v.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
            last_pixels = None if last_image is None else \
                i2v.video_processor.preprocess(last_image, height=height, width=width).to(device, torch.float32)
            prepared = i2v.prepare_latents(pixels, 1, pipe.vae.config.z_dim, height, width, num_frames,
                                           torch.float32, device, generator, latents, last_pixels)
            if self.expand_timesteps:  # TI2V: the image latent is the first frame, held clean
                noise, condition, first_frame_mask = prepared
                noise = (1 - first_frame_mask) * condition + first_frame_mask * noise
                frozen_first_frame = True
            else:  # I2V: mask + image latents concatenated along channels at every step
                noise, model_inputs["condition"] = prepared
            if self.adapters[0].image_dim is not None:  # both frames in the CLIP context, as diffusers
                model_inputs["image_embeds"] = i2v.encode_image(image if last_image is None else [image, last_image],
                                                                device)

        grid = self.adapters[0].token_grid(noise.shape)
        experts = [Expert(self.adapters[0], Conditioning(prompt_embeds, negative_prompt_embeds, guidance,
                                                         model_inputs))]
        switch_steps = []
        if len(self.adapters) == 2:
            experts.append(Expert(self.adapters[1], Conditioning(
                prompt_embeds, negative_prompt_embeds, guidance_2 if use_cfg else 1.0, model_inputs)))
            switch_steps.append(expert_switch_step(schedule, self.boundary_ratio))
        return WanJob(
            grid=grid,
            tokens=grid.patchify(noise),
            frozen=grid.frame_mask([0]) if frozen_first_frame else None,
            experts=experts,
            switch_steps=switch_steps,
            schedule=schedule,
            settings=dict(height=height, width=width, num_frames=num_frames, steps=schedule.steps,
                          shift=schedule.shift, guidance_scale=guidance,
                          guidance_scale_2=guidance_2 if len(self.adapters) == 2 else None, seed=seed,
                          last_frame=last_image is not None),
        )

    def denoising_inputs(self, job: WanJob) -> tuple[WanAdapter, TokenGrid, Conditioning]:
        """The first expert's adapter, the grid and its conditioning: what one forward of ``job`` takes."""
        return job.experts[0].adapter, job.grid, job.experts[0].conditioning

    def kv_cache_estimate(self, job: WanJob, sampler: Sampler) -> KVCacheEstimate | None:
        """The K/V cache ``sampler`` will allocate for ``job`` (one expert's at a time); None if none."""
        if not isinstance(sampler, HSASampler) or sampler.budget >= 1 or not sampler.config.kv_sync:
            return None
        return self._kv_estimate(job.grid.num_tokens, sampler.config,
                                 branches=max(expert.conditioning.num_branches for expert in job.experts))

    def forward_working_bytes(self, job: WanJob) -> int:
        return self._working_bytes(job.grid.num_tokens)

    def denoise(self, job: WanJob, sampler: Sampler, callback: StepCallback | None = None,
                free_bytes: int | None = None) -> SampleResult:
        """Run the sampler; first refuse, with the numbers, a K/V cache the device cannot hold."""
        if self.expert_offload:
            self._make_resident(0)  # the previous job may have ended on the low-noise expert
        estimate = self.kv_cache_estimate(job, sampler)
        if estimate is not None:
            check_kv_cache_fits(estimate, self.forward_working_bytes(job), self.device, free_bytes,
                                sampler.config.kv_cache_location)
        return sample_with_experts(sampler, job.experts, job.switch_steps, job.tokens, job.grid, job.schedule,
                                   frozen=job.frozen, callback=callback,
                                   before_expert=self._make_resident if self.expert_offload else None)

    def _make_resident(self, index: int) -> None:
        """Expert ``index`` on the device, the other on the CPU (moved off first: one expert at a time)."""
        device = self.device
        for other, adapter in enumerate(self.adapters):
            if other != index:
                adapter.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        self.adapters[index].to(device)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, on_fallback=None) -> tuple[np.ndarray, str]:
        """(1, C, F, H, W) latents → (F, H, W, 3) frames in [0, 1], retrying tiled or on CPU on out-of-memory."""
        pipe = self.pipeline
        vae = pipe.vae

        def decode_on_vae_device() -> np.ndarray:
            parameter = next(vae.parameters())
            z = latents.to(parameter.device, parameter.dtype)
            shape = (1, vae.config.z_dim, 1, 1, 1)
            mean = torch.tensor(vae.config.latents_mean).view(shape).to(z)
            inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(z)
            video = vae.decode(z / inverse_std + mean, return_dict=False)[0]
            return pipe.video_processor.postprocess_video(video, output_type="np")[0]

        return decode_without_losing_latents(vae, decode_on_vae_device, on_fallback)

    def decode_tokens(self, job: WanJob, tokens: torch.Tensor, on_fallback=None) -> DecodedClip:
        """Sampled tokens of ``job`` → the clip, decoded as ``decode`` does."""
        frames, decoded_with = self.decode(job.grid.unpatchify(tokens), on_fallback)
        return DecodedClip(frames, self.spec.fps, decoded_with)

    def latents_bytes(self, job: WanJob, tokens: torch.Tensor) -> bytes:
        """The (1, C, F, H, W) latents of sampled tokens as ``torch.save`` bytes (kept when decoding fails)."""
        return self.serialised(job.grid.unpatchify(tokens))

    def generate(self, prompt: str, sampler: Sampler, callback: StepCallback | None = None,
                 on_decode_fallback=None, **request: Any) -> GeneratedVideo:
        """prepare → denoise → decode; call the three yourself to keep the latents if decoding fails."""
        job = self.prepare(prompt, **request)
        result = self.denoise(job, sampler, callback)
        latents = job.grid.unpatchify(result.tokens)
        frames, decoded_with = self.decode(latents, on_decode_fallback)
        return GeneratedVideo(frames, self.spec.fps, latents, result, decoded_with)
