"""A registered real checkpoint (Wan 2.1 / 2.2, LTX-2) from a local diffusers-format directory.

The model loads once per worker process (``hsa_core.models.load_model``); the card is built from it:
the sizes and frame counts the operator allows (the preset by default), the preset's steps, guidance
and fps, what the family takes (an image, a last frame) and gives (a soundtrack). For every served
shape the card also says what the device can hold: HSA's K/V cache is sized against the memory free
with the model loaded, and a shape whose cache does not fit runs at budget 1.0 only — the gateway
refuses a lower budget there with the options that would fit, instead of a job failing mid-way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from jobs.records import MAX_STEPS, JobSpec, ModelCard, ModelLimits, ShapeInfo, shape_key
from jobs.sla import TimingModel

from .base import DecodeFailed, GeneratedClip, InputImages, Replan, StepHook, TimedShapes, sampler_figures
from .timing import PROBE_FRACTIONS, TimingCache, hardware_name, probe_repeats, time_mp4, timing_from_probe

log = logging.getLogger("hsa.worker")

GIB = 1024**3
TASKS = {"t2v": "text-to-video", "i2v": "image-to-video", "ti2v": "text- and image-to-video"}


class CheckpointRunner:
    def __init__(self, name: str, path: Path, *, sizes: list[str] | None = None,
                 num_frames: list[int] | None = None, device: str | None = None, dtype: str | None = None,
                 text_encoder: str = "device", expert_offload: bool = True, kv_cache_dtype: str | None = None,
                 kv_cache_location: str = "device", kv_forecast_layers: int = 0,
                 memory_limit_gib: float | None = None, timing_dir: Path | None = None, threads: int | None = None):
        import torch

        from hsa_core import HSAConfig
        from hsa_core.models import get_model_spec, load_model

        if threads:
            torch.set_num_threads(threads)
        self.name, self.spec = name, get_model_spec(name)
        # validated before the weights load: a bad setting fails in a second, not after minutes of loading
        self.hsa_config = HSAConfig(kv_cache_dtype=kv_cache_dtype, kv_cache_location=kv_cache_location,
                                    kv_forecast_layers=kv_forecast_layers)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        started = time.perf_counter()
        self.model = load_model(name, path, device, getattr(torch, dtype) if dtype else None,
                                text_encoder=text_encoder, expert_offload=expert_offload)
        log.info("%s loaded from %s in %.1f s", name, path, time.perf_counter() - started)
        self.device, self.memory_limit = torch.device(device), memory_limit_gib
        preset = f"{self.spec.width}x{self.spec.height}"
        self.sizes = list(dict.fromkeys(sizes or [preset]))
        self.num_frames = list(dict.fromkeys(num_frames or [self.spec.num_frames]))
        for size in self.sizes:
            width, height = map(int, size.split("x"))
            for frames in self.num_frames:
                self.model.check_shape(height, width, frames)  # ConfigError naming the constraint
        self.runtime = {
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "kv_cache_dtype": kv_cache_dtype or str(self.model.dtype).removeprefix("torch."),
            "kv_cache_location": kv_cache_location,
            "kv_forecast_layers": str(kv_forecast_layers),
            "text_encoder": text_encoder,
        }
        if self.spec.experts == 2:
            self.runtime["expert_offload"] = str(expert_offload).lower()
        self.shapes = self._shape_infos()
        cache = (TimingCache(timing_dir, name, hardware_name(self.device, self.model.dtype, threads))
                 if timing_dir else None)
        timings = {}
        for key in self.shapes:
            timings[key] = (cache.load(key) if cache else None) or self._probe_timing(key)
            if cache is not None:
                cache.save(key, timings[key])
        self.timings = TimedShapes(timings, cache)

    # memory ---------------------------------------------------------------------------------------

    def free_bytes(self) -> int | None:
        """What the device can still give a job: its free memory with the model loaded, within the
        operator's limit (HSA_MEMORY_LIMIT_GIB) if any; None: unlimited (a CPU without a limit)."""
        from hsa_core.memory import free_device_bytes

        free = free_device_bytes(self.device)
        if self.memory_limit is not None:
            within_limit = max(0, int(self.memory_limit * GIB) - self.model.resident_bytes())
            free = within_limit if free is None else min(free, within_limit)
        return free

    def _shape_infos(self) -> dict[str, ShapeInfo]:
        from hsa_core.memory import KVCacheFit, free_host_bytes

        free, host_free = self.free_bytes(), free_host_bytes()
        fits: dict[str, KVCacheFit] = {}
        for size in self.sizes:
            width, height = map(int, size.split("x"))
            for frames in self.num_frames:
                key = shape_key(width, height, frames)
                estimate = self.model.kv_cache_estimate_for(height, width, frames, self.hsa_config)
                fits[key] = KVCacheFit(estimate, self.model.working_bytes_for(height, width, frames), free,
                                       self.hsa_config.kv_cache_location, host_free)
                if not fits[key].full_budget_fits:
                    from hsa_core.errors import InsufficientMemoryError

                    raise InsufficientMemoryError(
                        f"{self.name} cannot serve {frames} frames of {size}: one forward needs about "
                        f"{fits[key].working_bytes / GIB:.2f} GiB and {free / GIB:.2f} GiB are free with the model "
                        "loaded; serve smaller sizes or fewer frames (--sizes, --num-frames)")
        fitting = sorted(key for key, fit in fits.items() if fit.fits)
        shapes = {}
        for key, fit in fits.items():
            width, height, frames = map(int, key.split("x"))
            refusal = None
            if not fit.fits:
                refusal = (f"HSA's K/V cache at {key} needs {fit.estimate.total_bytes / GIB:.1f} GiB "
                           f"({fit.estimate.describe().split(' = ')[0]}) and this worker has "
                           f"{(fit.free_bytes or 0) / GIB:.1f} GiB free; "
                           + (f"shapes where a budget below 1 fits: {', '.join(fitting)}; " if fitting else "")
                           + "or send budget 1 (no cache)")
                log.warning("%s at %s runs at budget 1.0 only: %s", self.name, key, fit.refusal())
            shapes[key] = ShapeInfo(tokens=self.model.token_counts(height, width, frames).tokens,
                                    kv_cache_refusal=refusal,
                                    **self._min_budgets(height, width, frames, sparse=refusal is None))
        return shapes

    def _min_budgets(self, height: int, width: int, frames: int, sparse: bool) -> dict[str, list[float]]:
        """Smallest feasible budget per step count, T2V and I2V; 1 everywhere where no cache fits."""
        return {f"min_budget_{mode}": [1.0] + [
            self.model.min_budget(steps, height, width, frames, with_image, self.hsa_config) if sparse else 1.0
            for steps in range(1, MAX_STEPS + 1)] for mode, with_image in (("t2v", False), ("i2v", True))}

    # timing ---------------------------------------------------------------------------------------

    def _probe_timing(self, key: str) -> TimingModel:
        """A cold start's short probe of one shape: text encoding, forwards at every token and at half of
        them (per guidance branch), a VAE decode and an MP4."""
        from PIL import Image

        from hsa_core import calibrate

        width, height, frames = map(int, key.split("x"))
        # an image-to-video model is probed with an image: its encoding is part of every job's fixed time
        image = Image.new("RGB", (width, height), (128, 128, 128)) if self.spec.needs_image else None
        last = {"last_image": image} if self.spec.last_frame else {}
        started = time.perf_counter()
        job = self.model.prepare("a timing probe", height=height, width=width, num_frames=frames, seed=0, image=image,
                                 **last)
        encode_seconds = time.perf_counter() - started
        adapter, grid, conditioning = self.model.denoising_inputs(job)
        branch = adapter.prepare_branch(grid, conditioning.prompt_embeds, **conditioning.model_inputs)
        started = time.perf_counter()
        adapter.velocity(job.tokens.to(adapter.device), _sigma(grid, adapter.device), branch)
        _synchronize(adapter.device)
        repeats = probe_repeats(time.perf_counter() - started)
        cost = calibrate(adapter, grid, branch, PROBE_FRACTIONS, repeats=repeats)
        started = time.perf_counter()
        decoded = self.model.decode_tokens(job, job.tokens)
        decode_seconds = time.perf_counter() - started
        mp4_seconds = time_mp4(decoded.frames, decoded.fps, decoded.audio, decoded.sample_rate)
        timing = timing_from_probe(cost, grid.num_tokens, conditioning.num_branches,
                                   encode_seconds + decode_seconds + mp4_seconds)
        log.info("%s at %s: %.3f s per full step, %.2f s outside denoising (probed)", self.name, key,
                 timing.step_seconds_fixed + timing.step_seconds_per_budget, timing.job_seconds_fixed)
        return timing

    def timing_for(self, spec: JobSpec) -> TimingModel | None:
        return self.timings.get(spec)

    def observe(self, spec: JobSpec, clip: GeneratedClip, fixed_seconds: float) -> None:
        self.timings.observe(spec, clip, fixed_seconds)

    # card -----------------------------------------------------------------------------------------

    def card(self) -> ModelCard:
        spec = self.spec
        default = self.timings.timings[shape_key(*map(int, self.sizes[0].split("x")), self.num_frames[0])]
        return ModelCard(
            id=self.name,
            family=spec.family,
            description=f"{spec.name}: {TASKS[spec.task]}"
                        + (", two experts" if spec.experts == 2 else "")
                        + (", with a generated soundtrack" if spec.family == "ltx2" else "")
                        + f" (weights of {spec.hub_id})",
            image_input={"t2v": "unsupported", "i2v": "required", "ti2v": "optional"}[spec.task],
            last_frame_input="required" if spec.last_frame else "unsupported",
            audio=spec.family == "ltx2",
            limits=ModelLimits(sizes=self.sizes, num_frames=self.num_frames, fps=spec.fps, max_steps=MAX_STEPS,
                               default_steps=spec.steps, default_size=self.sizes[0],
                               guidance_scale=spec.guidance_scale,
                               guidance_scale_2=spec.guidance_scale_2 if spec.experts == 2 else None,
                               max_prompt_tokens=self.model.max_text_tokens),
            shapes={key: shape.model_copy(update={"timing": self.timings.timings[key]})
                    for key, shape in self.shapes.items()},
            runtime=self.runtime,
            seconds_per_step=round(default.factor * (default.step_seconds_fixed + default.step_seconds_per_budget), 5),
        )

    # generation -----------------------------------------------------------------------------------

    def generate(self, spec: JobSpec, budget: float, images: InputImages, on_step: StepHook,
                 replan: Replan | None = None) -> GeneratedClip:
        from hsa_core import HSASampler

        request = dict(negative_prompt=spec.negative_prompt, image=images.first, height=spec.height,
                       width=spec.width, num_frames=spec.num_frames, steps=spec.steps,
                       guidance_scale=spec.guidance_scale, seed=spec.seed)
        if self.spec.family == "ltx2":
            request["frame_rate"] = spec.fps
        else:
            request.update(guidance_scale_2=spec.guidance_scale_2, last_image=images.last)
        started = time.perf_counter()
        job = self.model.prepare(spec.prompt, **request)
        prepare_seconds = time.perf_counter() - started
        sampler = HSASampler(budget, self.hsa_config, replan=replan)
        result = self.model.denoise(job, sampler, callback=lambda stats: on_step(stats.step + 1, spec.steps),
                                    free_bytes=self.free_bytes())
        started = time.perf_counter()
        fallbacks: list[str] = []
        try:
            decoded = self.model.decode_tokens(job, result.tokens, on_fallback=fallbacks.append)
        except Exception as error:
            raise DecodeFailed(f"decoding failed ({type(error).__name__}: {error})",
                               self.model.latents_bytes(job, result.tokens)) from error
        figures = sampler_figures(budget, result)
        figures.update(decoded_with=decoded.decoded_with, prepare_seconds=round(prepare_seconds, 4),
                       decode_seconds=round(time.perf_counter() - started, 4))
        if fallbacks:
            log.warning("job %s: VAE decode ran out of memory; decoded %s", spec.job_id, decoded.decoded_with)
        return GeneratedClip(decoded.frames, fps=decoded.fps, figures=figures, audio=decoded.audio,
                             sample_rate=decoded.sample_rate, denoise_seconds=result.seconds)


def _sigma(grid, device):
    import torch

    return torch.full((grid.batch,), 0.5, device=device)


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
