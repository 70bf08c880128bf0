"""The built-in tiny Wan-architecture model: 16 frames of 32×32, served at integer upscales."""

from __future__ import annotations

import time
from pathlib import Path

from jobs.records import MAX_STEPS, JobSpec, ModelCard, ModelLimits, ShapeInfo, shape_key
from jobs.sla import TimingModel

from .base import GeneratedClip, InputImages, Replan, StepHook, TimedShapes, sampler_figures
from .timing import PROBE_FRACTIONS, TimingCache, hardware_name, probe_repeats, time_mp4, timing_from_probe


class TinyRunner:
    """Every size is the same 32×32 generation, upscaled: one timing model serves them all."""

    name = "tiny"
    UPSCALES = (1, 2, 4, 8)

    def __init__(self, weights: Path | None = None, device: str = "cpu", threads: int | None = None,
                 sizes: list[str] | None = None, num_frames: list[int] | None = None,
                 timing_dir: Path | None = None, kv_forecast_layers: int = 0):
        import torch

        from hsa_core import HSAConfig
        from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyVideoModel

        self.hsa_config = HSAConfig(kv_forecast_layers=kv_forecast_layers)
        if threads:
            torch.set_num_threads(threads)
        self.model = TinyVideoModel.load(weights or WEIGHTS_DIR).to(device)
        config = self.model.config
        offered = [f"{config.size * k}x{config.size * k}" for k in self.UPSCALES]
        self.sizes = _restricted(sizes, offered, "sizes", "the tiny model draws 32x32 and shows it at "
                                 "integer upscales")
        self.num_frames = _restricted(num_frames, [config.frames], "num_frames", "the tiny model draws 16 frames")
        cache = TimingCache(timing_dir, self.name, hardware_name(device, torch.float32, threads)) if timing_dir else None
        timing = (cache.load(self.reference_shape) if cache else None) or self._probe_timing()
        if cache is not None:
            cache.save(self.reference_shape, timing)
        self.timings = TimedShapes({shape_key(*map(int, size.split("x")), frames): timing
                                    for size in self.sizes for frames in self.num_frames}, cache)
        self._card = self._static_card()

    @property
    def reference_shape(self) -> str:
        """The shape the timing cache keeps: the model's own 32×32×16 (every size costs the same)."""
        config = self.model.config
        return shape_key(config.size, config.size, config.frames)

    def _probe_timing(self) -> TimingModel:
        """Forwards at every token and at half of them, one text encoding, one decode and one MP4."""
        import torch

        from hsa_core import Conditioning, calibrate
        from hsa_core.media import upscale

        model, config = self.model, self.model.config
        adapter = model.adapter
        grid = adapter.token_grid(config.latent_shape)
        start = time.perf_counter()
        embeds = model.encode_prompts(["a red circle", ""])
        encode_seconds = time.perf_counter() - start
        branch = adapter.prepare_branch(grid, embeds[:1])
        start = time.perf_counter()
        with torch.inference_mode():
            adapter.velocity(torch.zeros(1, grid.num_tokens, grid.token_dim), torch.full((1,), 0.5), branch)
        repeats = probe_repeats(time.perf_counter() - start)
        cost = calibrate(adapter, grid, branch, PROBE_FRACTIONS, repeats=repeats)
        start = time.perf_counter()
        with torch.inference_mode():
            video = model.autoencoder.decode(torch.zeros(config.latent_shape))
        frames = video[0].permute(1, 2, 3, 0).numpy()
        decode_seconds = time.perf_counter() - start
        mp4_seconds = time_mp4(upscale(frames, 4), fps=8)
        conditioning = Conditioning(embeds[:1], embeds[1:], guidance_scale=config.guidance_scale)
        return timing_from_probe(cost, grid.num_tokens, conditioning.num_branches,
                                 encode_seconds + decode_seconds + mp4_seconds)

    def timing_for(self, spec: JobSpec) -> TimingModel | None:
        return self.timings.get(spec)

    def observe(self, spec: JobSpec, clip: GeneratedClip, fixed_seconds: float) -> None:
        self.timings.observe(spec, clip, fixed_seconds)

    def card(self) -> ModelCard:
        default = self.timings.timings[shape_key(*map(int, self._card.limits.default_size.split("x")),
                                                 self.num_frames[0])]
        shapes = {key: shape.model_copy(update={"timing": self.timings.timings[key]})
                  for key, shape in self._card.shapes.items()}
        full_step = default.step_seconds_fixed + default.step_seconds_per_budget
        return self._card.model_copy(update={"shapes": shapes,
                                             "seconds_per_step": round(default.factor * full_step, 5)})

    def _static_card(self) -> ModelCard:
        config = self.model.config
        grid = self.model.adapter.token_grid(config.latent_shape)
        frame_tokens = int(grid.frame_mask([0]).sum())  # held clean in I2V
        hsa = self.hsa_config
        min_t2v = [1.0] + [hsa.min_budget(steps, grid.num_tokens) for steps in range(1, MAX_STEPS + 1)]
        min_i2v = [1.0] + [hsa.min_budget(steps, grid.num_tokens, frozen_tokens=frame_tokens)
                           for steps in range(1, MAX_STEPS + 1)]
        shape = ShapeInfo(tokens=grid.num_tokens, min_budget_t2v=min_t2v, min_budget_i2v=min_i2v)
        default_size = f"{config.size * 4}x{config.size * 4}"
        return ModelCard(
            id=self.name,
            family="wan",
            description="built-in tiny Wan-architecture T2V/I2V model (synthetic moving shapes, 16 frames of "
                        f"{config.size}x{config.size}; larger sizes are nearest-neighbour upscales)",
            image_input="optional",
            limits=ModelLimits(sizes=self.sizes, num_frames=self.num_frames, fps=8, max_steps=MAX_STEPS,
                               default_steps=config.steps,
                               default_size=default_size if default_size in self.sizes else self.sizes[0],
                               guidance_scale=config.guidance_scale, max_prompt_tokens=config.max_words),
            shapes={shape_key(*map(int, size.split("x")), frames): shape
                    for size in self.sizes for frames in self.num_frames},
            runtime={"device": str(self.model.adapter.device), "dtype": "float32"},
        )

    def generate(self, spec: JobSpec, budget: float, images: InputImages, on_step: StepHook,
                 replan: Replan | None = None) -> GeneratedClip:
        from hsa_core import HSASampler
        from hsa_core.media import image_array, upscale

        config = self.model.config
        factor = spec.width // config.size
        if spec.width != spec.height or factor not in self.UPSCALES or spec.num_frames != config.frames:
            raise ValueError(f"tiny model cannot produce {spec.num_frames} frames of {spec.width}x{spec.height}")
        if images.last is not None:
            raise ValueError("the tiny model takes no last frame")
        first = None if images.first is None else image_array(images.first, config.size)
        clip, result = self.model.generate(
            spec.prompt, HSASampler(budget, self.hsa_config, replan=replan), image=first, steps=spec.steps,
            guidance_scale=spec.guidance_scale, seed=spec.seed, negative_prompt=spec.negative_prompt,
            callback=lambda stats: on_step(stats.step + 1, spec.steps),
        )
        figures = sampler_figures(budget, result)
        figures["unknown_words"] = self.model.tokenizer.unknown_words(spec.prompt)
        return GeneratedClip(upscale(clip, factor), fps=spec.fps, figures=figures, denoise_seconds=result.seconds)


def _restricted(wanted: list | None, offered: list, name: str, why: str) -> list:
    """The operator's restriction of what a model offers (all of it when none is given)."""
    if not wanted:
        return list(offered)
    unknown = [value for value in wanted if value not in offered]
    if unknown:
        from hsa_core import ConfigError

        raise ConfigError(f"{name}: {', '.join(map(str, unknown))} not offered ({why}); choose from "
                          f"{', '.join(map(str, offered))}")
    return list(dict.fromkeys(wanted))
