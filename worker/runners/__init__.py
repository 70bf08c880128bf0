"""Model runners: one loaded model behind ``card()``, ``generate()`` and a timing model per shape.

A runner is created once per worker process (weights stay in memory between jobs):

- ``TinyRunner``: the built-in tiny model (the default; CPU is enough);
- ``CheckpointRunner``: any registered Wan 2.1 / 2.2 or LTX-2 checkpoint from a local
  diffusers-format directory (``hsa_core.models``).

``check_model_setup`` validates what a worker is asked to serve without loading any weights, so a
missing or incomplete model directory stops ``hsa-video worker`` / ``serve`` at once, with one line.
"""

from __future__ import annotations

from jobs.settings import ServiceSettings

from .base import DecodeFailed, GeneratedClip, InputImages, ModelRunner, Replan, StepHook

TINY = "tiny"

__all__ = ["DecodeFailed", "GeneratedClip", "InputImages", "ModelRunner", "Replan", "StepHook", "check_model_setup",
           "known_models", "load_runner"]


def known_models() -> list[str]:
    from hsa_core.models import available_models

    return [TINY, *available_models()]


def check_model_setup(settings: ServiceSettings) -> None:
    """Raise (ConfigError, ModelNotFoundError, MissingDependencyError) when ``settings.model`` cannot be
    served as configured: an unknown name, a missing, incomplete or wrong-family directory."""
    from hsa_core.errors import ConfigError

    if settings.model == TINY:
        return
    if settings.model not in known_models():
        raise ConfigError(f"unknown model {settings.model!r}; known: {', '.join(known_models())}")
    from hsa_core.models import check_dependencies, check_model_directory, get_model_spec

    spec = get_model_spec(settings.model)
    if settings.model_path is None:
        raise ConfigError(f"{settings.model} needs its weights: --model-path DIR (HSA_MODEL_PATH), a local "
                          f"diffusers-format directory, e.g. `huggingface-cli download {spec.hub_id} --local-dir DIR`")
    check_dependencies(spec)
    check_model_directory(spec, settings.model_path, for_serving=True)


def load_runner(settings: ServiceSettings) -> ModelRunner:
    """The runner of ``settings.model``, loaded with the worker settings (sizes, device, memory options)."""
    timing_dir = settings.data_dir / "timing"
    if settings.model == TINY:
        from .tiny import TinyRunner

        return TinyRunner(weights=settings.model_path or settings.tiny_weights, threads=settings.torch_threads,
                          sizes=settings.sizes, num_frames=settings.num_frames, timing_dir=timing_dir,
                          kv_forecast_layers=settings.kv_forecast_layers)
    from .checkpoint import CheckpointRunner

    check_model_setup(settings)
    return CheckpointRunner(settings.model, settings.model_path, sizes=settings.sizes,
                            num_frames=settings.num_frames, device=settings.device, dtype=settings.dtype,
                            text_encoder=settings.text_encoder, expert_offload=settings.expert_offload,
                            kv_cache_dtype=settings.kv_cache_dtype, kv_cache_location=settings.kv_cache_location,
                            kv_forecast_layers=settings.kv_forecast_layers,
                            memory_limit_gib=settings.memory_limit_gib, timing_dir=timing_dir,
                            threads=settings.torch_threads)
