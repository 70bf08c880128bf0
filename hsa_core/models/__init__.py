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

from ..errors import ConfigError, MissingDependencyError, ModelNotFoundError
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

# Components a served model needs although a checkpoint may leave them out (null in model_index.json).
SERVING_COMPONENTS = {"wan": ("text_encoder", "tokenizer", "vae", "transformer"),
                      "ltx2": ("text_encoder", "tokenizer", "vae", "transformer", "connectors", "audio_vae", "vocoder")}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "spiece.model", "tokenizer.model", "vocab.json"}
TEXT_ENCODER_PLACEMENTS = ("device", "cpu", "offload")


def check_dependencies(spec: ModelSpec) -> None:
    missing = [name for name in REQUIRED_PACKAGES[spec.family] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"{spec.name} needs the Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def check_model_directory(spec: ModelSpec, path: str | Path, for_serving: bool = False) -> dict:
    """The directory's model_index.json, after checking it holds a complete checkpoint of ``spec``'s kind.

    Every component the index names must be there with its configuration and, for models, its weights
    (an interrupted download leaves folders without them). ``for_serving``: the text encoder and its
    tokenizer too, which a caller passing its own prompt embeddings can do without.
    """
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
    try:
        index = json.loads(index_file.read_text())
    except ValueError as error:
        raise ModelNotFoundError(f"{index_file} is not valid JSON ({error}): re-download it, e.g. "
                                 f"`{download}`") from None
    found, expected = index.get("_class_name"), PIPELINE_CLASSES[spec.family][spec.task]
    if found not in expected:
        raise ModelNotFoundError(f"{path} holds a {found} checkpoint, but {spec.name} needs a {' or '.join(expected)}")
    if spec.experts == 2 and (index.get("transformer_2") or [None])[0] is None:
        raise ModelNotFoundError(
            f"{path} has no transformer_2, but {spec.name} is a two-expert model (high- and low-noise transformers)"
        )
    required = set(SERVING_COMPONENTS[spec.family]) if for_serving else set()
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        if entry[1] is None:
            if name in required:
                raise ModelNotFoundError(f"{path} has no {name}, which serving needs (prompts are encoded by the "
                                         f"worker): use the full checkpoint, e.g. `{download}`")
            continue
        missing = _missing_files(path / name, entry[1])
        if missing:
            raise ModelNotFoundError(f"{path}: {name}/ has no {missing} (an incomplete download?); "
                                     f"re-download it, e.g. `{download}`")
    return index


def _missing_files(folder: Path, class_name: str) -> str | None:
    """What a component folder lacks (None: complete): its configuration, and weights for a model."""
    if not folder.is_dir():
        return "folder"
    files = {file.name for file in folder.iterdir()}
    if "Tokenizer" in class_name:
        return None if files & TOKENIZER_FILES else f"tokenizer files ({', '.join(sorted(TOKENIZER_FILES))})"
    if "Scheduler" in class_name:
        return None if "scheduler_config.json" in files else "scheduler_config.json"
    if "Processor" in class_name:
        return None if "preprocessor_config.json" in files else "preprocessor_config.json"
    if "config.json" not in files:
        return "config.json"
    if not any(name.endswith((".safetensors", ".bin")) for name in files):
        return "weights (*.safetensors)"
    for index_name in (name for name in files if name.endswith(".index.json")):  # sharded weights: every shard
        shards = set(json.loads((folder / index_name).read_text()).get("weight_map", {}).values())
        absent = sorted(shards - files)
        if absent:
            return f"weight shard{'s' if len(absent) > 1 else ''} {', '.join(absent)}"
    return None


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on accelerators (what the checkpoints ship in), fp32 on CPU."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def load_model(name: str, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               text_encoder: str = "device", expert_offload: bool = False):
    """Load a registered model from a local diffusers-format directory onto ``device``.

    The transformers and text encoder load in ``dtype`` (default: ``default_dtype``); the VAE and the
    CLIP image encoder (Wan), the video and audio VAEs and the vocoder (LTX-2) stay in fp32.
    ``text_encoder``: "device" keeps it on ``device``; "cpu" keeps it and runs it on the CPU; "offload"
    keeps it on the CPU and moves it to ``device`` for each encoding. ``expert_offload`` (two-expert
    models): the expert not sampling waits on the CPU, so only one is ever on ``device``.
    """
    spec = get_model_spec(name)
    if text_encoder not in TEXT_ENCODER_PLACEMENTS:
        raise ConfigError(f"text_encoder must be one of {', '.join(TEXT_ENCODER_PLACEMENTS)}, got {text_encoder!r}")
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
    host = torch.device("cpu")
    for component, module in pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            on_host = (component == "text_encoder" and text_encoder != "device") or (
                component == "transformer_2" and expert_offload)
            module.to(host if on_host else device)
    pipeline.set_progress_bar_config(disable=True)

    if spec.family == "ltx2":
        from .ltx2 import LTX2VideoModel

        return LTX2VideoModel(pipeline, spec, text_encoder=text_encoder)
    from .wan import WanVideoModel

    return WanVideoModel(pipeline, spec, text_encoder=text_encoder, expert_offload=expert_offload)


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
