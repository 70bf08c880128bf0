"""Real checkpoints by name: the registry, its presets and loading from a local diffusers directory.

``load_model("wan2.1-t2v-1.3b", "/models/Wan2.1-T2V-1.3B-Diffusers")`` (or ``"ltx-2"``) checks the optional packages
and the directory first, so a missing piece is one clear error (``MissingDependencyError``,
``ModelNotFoundError``) instead of a traceback from deep inside diffusers. Nothing here imports
diffusers until a model is loaded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from ..errors import MissingDependencyError, ModelNotFoundError
from .registry import MODELS, ModelSpec, available_models, get_model_spec

# Python packages each family needs beyond torch: diffusers for the pipeline, transformers for the
# UMT5 text encoder and CLIP image encoder, accelerate for diffusers' from_pretrained of Wan's
# transformer (it keeps some modules in fp32, which needs accelerate's low-memory loading), ftfy for
# the prompt cleaning of diffusers' Wan image-to-video pipeline (it calls ftfy unconditionally). LTX-2
# needs transformers for its Gemma 3 text encoder and PyAV (import name av) for the H.264 re-compression
# of the conditioning image and for muxing the soundtrack.
REQUIRED_PACKAGES = {"wan": ("diffusers", "transformers", "accelerate", "ftfy"),
                     "ltx2": ("diffusers", "transformers", "accelerate", "av")}

# Pipeline classes a checkpoint directory may hold, by family and task (TI2V ships as a WanPipeline).
PIPELINE_CLASSES = {
    "wan": {"t2v": ("WanPipeline",), "ti2v": ("WanPipeline", "WanImageToVideoPipeline"),
            "i2v": ("WanImageToVideoPipeline",)},
    "ltx2": {"ti2v": ("LTX2Pipeline", "LTX2ImageToVideoPipeline")},
}

# Components loaded in fp32 whatever the transformer's dtype (the decoders, as diffusers' examples load Wan's).
FP32_COMPONENTS = {"wan": ("vae", "image_encoder"), "ltx2": ("vae", "audio_vae", "vocoder")}


def check_dependencies(spec: ModelSpec) -> None:
    missing = [name for name in REQUIRED_PACKAGES[spec.family] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"{spec.name} needs the Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def check_model_directory(spec: ModelSpec, path: str | Path) -> dict:
    """The directory's model_index.json, after checking it holds a checkpoint of ``spec``'s kind."""
    path = Path(path)
    download = f"huggingface-cli download {spec.hub_id} --local-dir {path}"
    if not path.is_dir():
        raise ModelNotFoundError(
            f"no model directory at {path}: put the diffusers-format weights of {spec.name} there, e.g. `{download}`"
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelNotFoundError(
            f"{path} is not a diffusers-format model directory (no model_index.json); "
            f"{spec.name} needs the diffusers version of the weights, e.g. `{download}`"
        )
    index = json.loads(index_file.read_text())
    found, expected = index.get("_class_name"), PIPELINE_CLASSES[spec.family][spec.task]
    if found not in expected:
        raise ModelNotFoundError(f"{path} holds a {found} checkpoint, but {spec.name} needs a {' or '.join(expected)}")
    if spec.experts == 2 and (index.get("transformer_2") or [None])[0] is None:
        raise ModelNotFoundError(
            f"{path} has no transformer_2, but {spec.name} is a two-expert model (high- and low-noise transformers)"
        )
    return index


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on accelerators (what the checkpoints ship in), fp32 on CPU."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def load_model(name: str, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Load a registered model from a local diffusers-format directory onto ``device``.

    The transformers and text encoder load in ``dtype`` (default: ``default_dtype``); the VAE and the
    CLIP image encoder (Wan), the video and audio VAEs and the vocoder (LTX-2) stay in fp32.
    """
    spec = get_model_spec(name)
    check_dependencies(spec)
    index = check_model_directory(spec, path)
    device = torch.device(device)
    dtype = dtype or default_dtype(device)

    import diffusers

    pipeline_class = getattr(diffusers, index["_class_name"])
    try:
        pipeline = pipeline_class.from_pretrained(
            str(path), dtype={"default": dtype, **dict.fromkeys(FP32_COMPONENTS[spec.family], torch.float32)}
        )
    except OSError as error:  # diffusers' and transformers' "file not found" errors
        raise ModelNotFoundError(f"could not load {spec.name} from {path}: {error}") from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)

    if spec.family == "ltx2":
        from .ltx2 import LTX2VideoModel

        return LTX2VideoModel(pipeline, spec)
    from .wan import WanVideoModel

    return WanVideoModel(pipeline, spec)


__all__ = [
    "MODELS",
    "ModelSpec",
    "available_models",
    "check_dependencies",
    "check_model_directory",
    "default_dtype",
    "get_model_spec",
    "load_model",
]
