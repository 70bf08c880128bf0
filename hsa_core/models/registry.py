"""The real checkpoints hsa_core can run, by name, with their presets.

Each entry names a diffusers-format checkpoint family and the settings its authors recommend; a
request may override any of them. Presets follow the Wan 2.1 / 2.2 reference configurations, the
LTX-2 diffusers examples and pipeline defaults (guidance) and the diffusers model cards (40 Euler
steps instead of the references' UniPC 50 or LTX-2's 30: HSA budgets are fractions of a 40-step
flow-matching Euler run, the paper's reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

Task = Literal["t2v", "i2v", "ti2v"]


@dataclass(frozen=True)
class AudioVideoGuidance:
    """LTX-2's guidance besides CFG, named as diffusers' LTX2Pipeline names it; an ``audio_*`` None takes
    the video value. The defaults switch every term off.

    stg_scale: spatio-temporal guidance, v̂ += s·(v_c − v_stg), v_stg with the self-attentions of
        ``stg_blocks`` skipped (0: off). Only models built with ``perturbed_attn`` (LTX-2.3) take the
        perturbation; for the others diffusers' STG forward equals the conditional one, so it adds nothing.
    modality_scale: modality-isolation guidance, v̂ += (m − 1)·(v_c − v_iso), v_iso without the
        audio↔video attentions (1: off).
    guidance_rescale: φ of guidance rescaling, per stream (0: off).
    """

    stg_scale: float = 0.0
    audio_stg_scale: float | None = None
    stg_blocks: tuple[int, ...] = ()
    modality_scale: float = 1.0
    audio_modality_scale: float | None = None
    guidance_rescale: float = 0.0
    audio_guidance_rescale: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    task: "t2v" takes no image, "i2v" needs one, "ti2v" takes one optionally (Wan 2.2 TI2V, LTX-2: the
        image becomes the clean first latent frame).
    pipeline: the diffusers pipeline class the checkpoint directory holds (its model_index.json).
    shift: the schedule shift; None takes the checkpoint scheduler's resolution-dependent one (LTX-2).
    experts: 2 for the Wan 2.2 A14B mixture (transformer above the boundary, transformer_2 below).
    boundary_ratio: the expert switch when the checkpoint's model_index.json does not give one.
    guidance_scale_2: CFG scale of the low-noise expert (diffusers' guidance_scale_2).
    audio_guidance_scale: CFG scale of the audio tokens (LTX-2; diffusers' audio_guidance_scale).
    cross_modal_timestep: LTX-2's audio↔video modulation reads the step's σ, not each video token's
        (diffusers' use_cross_timestep: LTX-2.3 and later).
    audio_video_guidance: LTX-2's spatio-temporal and modality-isolation guidance and guidance rescaling.
    last_frame: the checkpoint was trained to take a last frame besides the first (Wan's first-last-frame
        model, through diffusers' ``last_image``).
    """

    name: str
    family: Literal["wan", "ltx2"]
    task: Task
    pipeline: str
    hub_id: str  # where users download the diffusers-format weights
    height: int
    width: int
    num_frames: int
    fps: int
    shift: float | None
    guidance_scale: float
    steps: int = 40
    experts: int = 1
    boundary_ratio: float | None = None
    guidance_scale_2: float | None = None
    audio_guidance_scale: float | None = None
    cross_modal_timestep: bool = False
    audio_video_guidance: AudioVideoGuidance | None = None
    last_frame: bool = False

    @property
    def takes_image(self) -> bool:
        return self.task in ("i2v", "ti2v")

    @property
    def needs_image(self) -> bool:
        return self.task == "i2v"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("wan2.1-t2v-1.3b", "wan", "t2v", "WanPipeline", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                  height=480, width=832, num_frames=81, fps=16, shift=3.0, guidance_scale=5.0),
        ModelSpec("wan2.1-t2v-14b", "wan", "t2v", "WanPipeline", "Wan-AI/Wan2.1-T2V-14B-Diffusers",
                  height=720, width=1280, num_frames=81, fps=16, shift=5.0, guidance_scale=5.0),
        ModelSpec("wan2.1-i2v-14b-480p", "wan", "i2v", "WanImageToVideoPipeline",
                  "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                  height=480, width=832, num_frames=81, fps=16, shift=3.0, guidance_scale=5.0),
        ModelSpec("wan2.1-flf2v-14b-720p", "wan", "i2v", "WanImageToVideoPipeline",
                  "Wan-AI/Wan2.1-FLF2V-14B-720P-Diffusers",
                  height=720, width=1280, num_frames=81, fps=16, shift=16.0, guidance_scale=5.0, last_frame=True),
        ModelSpec("wan2.2-ti2v-5b", "wan", "ti2v", "WanPipeline", "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                  height=704, width=1280, num_frames=121, fps=24, shift=5.0, guidance_scale=5.0),
        ModelSpec("wan2.2-t2v-a14b", "wan", "t2v", "WanPipeline", "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
                  height=720, width=1280, num_frames=81, fps=16, shift=12.0, guidance_scale=4.0,
                  experts=2, boundary_ratio=0.875, guidance_scale_2=3.0),
        ModelSpec("wan2.2-i2v-a14b", "wan", "i2v", "WanImageToVideoPipeline", "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
                  height=720, width=1280, num_frames=81, fps=16, shift=5.0, guidance_scale=3.5,
                  experts=2, boundary_ratio=0.9, guidance_scale_2=3.5),
        ModelSpec("ltx-2", "ltx2", "ti2v", "LTX2Pipeline", "Lightricks/LTX-2",
                  height=512, width=768, num_frames=121, fps=24, shift=None, guidance_scale=3.0,
                  audio_guidance_scale=7.0,
                  audio_video_guidance=AudioVideoGuidance(  # diffusers' LTX2Pipeline defaults
                      stg_scale=1.0, audio_stg_scale=1.0, stg_blocks=(28,), modality_scale=3.0,
                      audio_modality_scale=3.0, guidance_rescale=0.7, audio_guidance_rescale=0.7)),
    ]
}


def available_models() -> list[str]:
    return sorted(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; ConfigError lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(available_models())}") from None
