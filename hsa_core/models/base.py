"""What the Wan and LTX-2 models share around their own loops: shapes, the text encoder's placement,
memory accounting and the decoded clip."""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from .registry import ModelSpec


@dataclass(frozen=True)
class TokenCounts:
    """The tokens of one clip shape, as the sampler sees them.

    tokens: every token the transformer denoises (LTX-2: video and audio);
    first_frame_frozen: the tokens an input image holds clean (the first latent frame of Wan 2.2 TI2V and
        LTX-2 I2V; 0 where the image conditions through channels, Wan 2.1 / 2.2 A14B I2V);
    always_active: tokens computed at every step whatever the budget (LTX-2's audio).
    """

    tokens: int
    first_frame_frozen: int = 0
    always_active: int = 0


@dataclass
class DecodedClip:
    frames: np.ndarray  # (F, H, W, 3) float in [0, 1]
    fps: int
    decoded_with: str  # "device", "tiled" or "cpu"
    audio: np.ndarray | None = None  # (channels, samples) waveform
    sample_rate: int | None = None


class CheckpointModel:
    """Base of ``WanVideoModel`` and ``LTX2VideoModel``: a diffusers pipeline and its registry entry.

    ``text_encoder``: where the text encoder runs — "device" (where the transformer is), "cpu", or
    "offload" (kept on the CPU, moved to the device for each encoding and back).
    """

    max_text_tokens: int
    example_frames: int  # a frame count the docs suggest, for error messages

    def __init__(self, pipeline, spec: ModelSpec, text_encoder: str = "device"):
        self.pipeline, self.spec, self.text_encoder_placement = pipeline, spec, text_encoder

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute dtype."""
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        raise NotImplementedError

    @property
    def frame_stride(self) -> int:
        raise NotImplementedError

    def check_shape(self, height: int, width: int, num_frames: int) -> None:
        """ConfigError unless the model can make ``num_frames`` frames of height × width."""
        multiple, stride = self.size_multiple, self.frame_stride
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ConfigError(f"{self.spec.name}: height and width must be positive multiples of {multiple}, "
                              f"got {height}×{width}")
        if num_frames < 1 or (num_frames - 1) % stride:
            raise ConfigError(f"{self.spec.name}: num_frames must be {stride}·k + 1 (e.g. {self.example_frames}), "
                              f"got {num_frames}")

    @contextmanager
    def text_encoding(self) -> Iterator[torch.device]:
        """The device to encode prompts on, with the text encoder there for the duration."""
        encoder = getattr(self.pipeline, "text_encoder", None)
        if encoder is None or self.text_encoder_placement == "device":
            yield self.device
        elif self.text_encoder_placement == "cpu":
            yield torch.device("cpu")
        else:  # offload: on the device only while it encodes
            encoder.to(self.device)
            try:
                yield self.device
            finally:
                encoder.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def resident_bytes(self) -> int:
        """Bytes of the pipeline's weights and buffers on the compute device."""
        total = 0
        for module in self.pipeline.components.values():
            if isinstance(module, torch.nn.Module):
                for tensor in [*module.parameters(), *module.buffers()]:
                    if tensor.device == self.device:
                        total += tensor.numel() * tensor.element_size()
        return total

    @staticmethod
    def serialised(latents) -> bytes:
        """``torch.save`` bytes of latents (a tensor or a dict of them), moved to the CPU."""
        if isinstance(latents, dict):
            latents = {name: tensor.detach().cpu() for name, tensor in latents.items()}
        else:
            latents = latents.detach().cpu()
        buffer = io.BytesIO()
        torch.save(latents, buffer)
        return buffer.getvalue()
