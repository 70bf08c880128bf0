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
  ``guidance_scale`` above it and ``guidance_scale_2`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters.base import TokenGrid
from ..adapters.wan import WanAdapter
from ..errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from ..memory import KVCacheEstimate, check_kv_cache_fits, decode_without_losing_latents
from ..samplers.base import Conditioning, SampleResult, Sampler, StepCallback
from ..samplers.experts import Expert, expert_switch_step, sample_with_experts
from ..samplers.hsa import HSASampler
from ..schedule import FlowMatchSchedule
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


class WanVideoModel:
    """A Wan checkpoint loaded through diffusers, sampled by hsa_core."""

    def __init__(self, pipeline, spec: ModelSpec):
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
        self.pipeline = pipeline
        self.spec = spec
        self.adapters = [WanAdapter(transformer)]
        if spec.experts == 2:
            self.adapters.append(WanAdapter(transformer_2))
        self.boundary_ratio = pipeline.config.get("boundary_ratio") or spec.boundary_ratio
        self.expand_timesteps = bool(pipeline.config.get("expand_timesteps", False))
        self._image_pipeline = None

    @property
    def device(self) -> torch.device:
        return self.adapters[0].device

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

    def _check_shape(self, height: int, width: int, num_frames: int) -> None:
        multiple, stride = self.size_multiple, self.frame_stride
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ConfigError(f"{self.spec.name}: height and width must be positive multiples of {multiple}, "
                              f"got {height}×{width}")
        if num_frames < 1 or (num_frames - 1) % stride:
            raise ConfigError(f"{self.spec.name}: num_frames must be {stride}·k + 1 (e.g. 81), got {num_frames}")

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
    ) -> WanJob:
        """Encode the prompt (and image), draw the noise from ``seed``; preset values fill what is None.

        ``image`` is a PIL image (or anything diffusers' video processor takes). ``latents`` replaces
        the seeded noise, as in diffusers.
        """
        spec, pipe = self.spec, self.pipeline
        if spec.needs_image and image is None:
            raise ConfigError(f"{spec.name} is image-to-video: it needs an image")
        if image is not None and not spec.takes_image:
            raise ConfigError(f"{spec.name} is text-to-video: it takes no image")
        height, width = height or spec.height, width or spec.width
        num_frames = num_frames or spec.num_frames
        self._check_shape(height, width, num_frames)
        guidance = spec.guidance_scale if guidance_scale is None else guidance_scale
        guidance_2 = next(g for g in (guidance_scale_2, spec.guidance_scale_2, guidance) if g is not None)
        schedule = FlowMatchSchedule(steps or spec.steps, spec.shift if shift is None else shift)
        device = self.device

        # diffusers decides CFG on the first scale alone, for both experts
        use_cfg = guidance > 1.0
        prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
            prompt=prompt if prompt_embeds is None else None,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=use_cfg,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=MAX_TEXT_TOKENS,
            device=device,
        )
        generator = torch.Generator("cpu").manual_seed(seed)
        model_inputs: dict[str, torch.Tensor] = {}
        frozen_first_frame = False
        if image is None:
            noise = pipe.prepare_latents(1, self.adapters[0].out_channels, height, width, num_frames,
                                         torch.float32, device, generator, latents)
        else:
            i2v = self.image_pipeline
            pixels = i2v.video_processor.preprocess(image, height=height, width=width).to(device, torch.float32)
            prepared = i2v.prepare_latents(pixels, 1, pipe.vae.config.z_dim, height, width, num_frames,
                                           torch.float32, device, generator, latents)
            if self.expand_timesteps:  # TI2V: the image latent is the first frame, held clean
                noise, condition, first_frame_mask = prepared
                noise = (1 - first_frame_mask) * condition + first_frame_mask * noise
                frozen_first_frame = True
            else:  # I2V: mask + image latents concatenated along channels at every step
                noise, model_inputs["condition"] = prepared
            if self.adapters[0].image_dim is not None:
                model_inputs["image_embeds"] = i2v.encode_image(image, device)

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
                          guidance_scale_2=guidance_2 if len(self.adapters) == 2 else None, seed=seed),
        )

    def kv_cache_estimate(self, job: WanJob, sampler: Sampler) -> KVCacheEstimate | None:
        """The K/V cache ``sampler`` will allocate for ``job`` (one expert's at a time); None if none."""
        if not isinstance(sampler, HSASampler) or sampler.budget >= 1 or not sampler.config.kv_sync:
            return None
        adapter = self.adapters[0]
        return KVCacheEstimate(
            layers=adapter.num_layers,
            tokens=job.grid.num_tokens,
            width=adapter.width,
            dtype=sampler.config.cache_dtype or adapter.dtype,
            branches=max(expert.conditioning.num_branches for expert in job.experts),
        )

    def forward_working_bytes(self, job: WanJob) -> int:
        """Transient memory of one forward, estimated by its largest activation (the FFN's hidden layer)."""
        adapter = self.adapters[0]
        ffn_dim = adapter.transformer.config.ffn_dim
        element = torch.empty((), dtype=adapter.dtype).element_size()
        return 2 * job.grid.num_tokens * ffn_dim * element

    def denoise(self, job: WanJob, sampler: Sampler, callback: StepCallback | None = None,
                free_bytes: int | None = None) -> SampleResult:
        """Run the sampler; first refuse, with the numbers, a K/V cache the device cannot hold."""
        estimate = self.kv_cache_estimate(job, sampler)
        if estimate is not None:
            check_kv_cache_fits(estimate, self.forward_working_bytes(job), self.device, free_bytes)
        return sample_with_experts(sampler, job.experts, job.switch_steps, job.tokens, job.grid, job.schedule,
                                   frozen=job.frozen, callback=callback)

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

    def generate(self, prompt: str, sampler: Sampler, callback: StepCallback | None = None,
                 on_decode_fallback=None, **request: Any) -> GeneratedVideo:
        """prepare → denoise → decode; call the three yourself to keep the latents if decoding fails."""
        job = self.prepare(prompt, **request)
        result = self.denoise(job, sampler, callback)
        latents = job.grid.unpatchify(result.tokens)
        frames, decoded_with = self.decode(latents, on_decode_fallback)
        return GeneratedVideo(frames, self.spec.fps, latents, result, decoded_with)
