"""Tiny random-init diffusers-format checkpoint directories of the served families, written to disk as
``huggingface-cli download`` would leave the real ones: what ``--model-path`` points a worker at.

Each holds its text encoder and tokenizer (a worker encodes prompts itself) and, for Wan, a
``FlowMatchEulerDiscreteScheduler`` with the registry preset's shift, so diffusers' own pipeline
loaded from the same directory is the reference a served video is compared with. Sizes are tiny:
Wan 9 frames of 64×64, LTX-2 5 frames of 32×32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Served:
    """How a test serves a model: the flags of its worker and what its requests look like."""

    name: str
    size: str  # "WIDTHxHEIGHT"
    num_frames: int
    image: str  # "none", "optional" or "required"
    last_frame: bool = False
    audio: bool = False

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])

    def worker_flags(self, directory: Path) -> list[str]:
        return ["--model", self.name, "--model-path", str(directory), "--sizes", self.size,
                "--num-frames", str(self.num_frames)]


SERVED = {served.name: served for served in (
    Served("wan2.1-t2v-1.3b", "64x64", 9, "none"),
    Served("wan2.1-i2v-14b-480p", "64x64", 9, "required"),
    Served("wan2.1-flf2v-14b-720p", "64x64", 9, "required", last_frame=True),
    Served("wan2.2-ti2v-5b", "64x64", 9, "optional"),
    Served("wan2.2-t2v-a14b", "64x64", 9, "none"),
    Served("ltx-2", "32x32", 5, "optional", audio=True),
)}


def write_checkpoint(name: str, directory: Path) -> Path:
    """The tiny pipeline of ``name`` saved with ``save_pretrained`` under ``directory``."""
    if name == "ltx-2":
        from .tiny_ltx2 import build_pipeline as build_ltx2

        build_ltx2(with_text_encoder=True).save_pretrained(directory)
    else:
        from hsa_core.models import get_model_spec

        from .tiny import build_pipeline

        build_pipeline(name, shift=get_model_spec(name).shift, with_text_encoder=True).save_pretrained(directory)
    return directory
