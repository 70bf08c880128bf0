"""The built-in tiny text/image-to-video model: autoencoder + text encoder + a small Wan transformer.

The transformer is a diffusers ``WanTransformer3DModel``, so generation runs through the same
``WanAdapter`` and HSA path as real Wan checkpoints. One checkpoint does T2V and I2V: it was trained
with the first latent frame sometimes held clean at σ = 0 (per-token timesteps, Wan 2.2 TI2V style).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...samplers.base import Conditioning, SampleResult, StepCallback
from ...schedule import FlowMatchSchedule
from .autoencoder import TinyAutoencoder
from .text import TextEncoder, Tokenizer, domain_vocabulary
from .vocabulary import FRAMES, SIZE

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class TinyConfig:
    frames: int = FRAMES
    size: int = SIZE
    latent_channels: int = 4
    latent_size: int = SIZE // 2
    patch: int = 4  # latent pixels per token side
    autoencoder_width: int = 64
    text_dim: int = 64
    text_layers: int = 2
    max_words: int = 24
    heads: int = 2
    head_dim: int = 64
    layers: int = 6
    ffn_mult: int = 4
    shift: float = 3.0
    guidance_scale: float = 4.0
    steps: int = 40
    vocabulary: list[str] = field(default_factory=domain_vocabulary)

    def transformer_config(self) -> dict:
        width = self.heads * self.head_dim
        return dict(
            patch_size=(1, self.patch, self.patch),
            num_attention_heads=self.heads,
            attention_head_dim=self.head_dim,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            text_dim=self.text_dim,
            freq_dim=256,
            ffn_dim=self.ffn_mult * width,
            num_layers=self.layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=64,
        )

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        return (1, self.latent_channels, self.frames, self.latent_size, self.latent_size)


class TinyVideoModel:
    """Everything needed to turn a caption (and optionally a first frame) into a clip."""

    def __init__(self, config: TinyConfig, autoencoder: TinyAutoencoder, text_encoder: TextEncoder, transformer):
        self.config = config
        self.autoencoder = autoencoder.eval()
        self.text_encoder = text_encoder.eval()
        self.transformer = transformer.eval()
        self.tokenizer = Tokenizer(config.vocabulary, config.max_words)
        self._adapter = None

    @classmethod
    def create(cls, config: TinyConfig | None = None, seed: int = 0) -> "TinyVideoModel":
        """Random-init components (the starting point of training)."""
        from diffusers import WanTransformer3DModel

        config = config or TinyConfig()
        torch.manual_seed(seed)
        return cls(
            config,
            TinyAutoencoder(config.latent_channels, config.autoencoder_width),
            TextEncoder(len(config.vocabulary), config.text_dim, config.text_layers, length=config.max_words + 1),
            WanTransformer3DModel(**config.transformer_config()),
        )

    @classmethod
    def load(cls, directory: str | Path = WEIGHTS_DIR) -> "TinyVideoModel":
        from diffusers import WanTransformer3DModel
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "tiny_config.json").exists():
            raise FileNotFoundError(
                f"no tiny-model weights in {directory}: run `hsa-video train-tiny` to create them"
            )
        config = TinyConfig(**json.loads((directory / "tiny_config.json").read_text())["model"])
        model = cls.create(config)
        model.autoencoder.load_state_dict(load_file(directory / "autoencoder.safetensors"))
        model.text_encoder.load_state_dict(load_file(directory / "text_encoder.safetensors"))
        # diffusers layout on disk; loaded without from_pretrained, which needs accelerate for Wan's fp32 modules
        transformer_dir = directory / "transformer"
        model.transformer = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(transformer_dir))
        model.transformer.load_state_dict(load_file(transformer_dir / "diffusion_pytorch_model.safetensors"))
        model.transformer.eval()
        return model

    def save(self, directory: str | Path, training: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.autoencoder.state_dict().items()},
                  directory / "autoencoder.safetensors")
        save_file({k: v.contiguous() for k, v in self.text_encoder.state_dict().items()},
                  directory / "text_encoder.safetensors")
        self.transformer.save_pretrained(directory / "transformer")
        (directory / "tiny_config.json").write_text(
            json.dumps({"model": asdict(self.config), "training": training or {}}, indent=2) + "\n"
        )

    def to(self, device: str | torch.device) -> "TinyVideoModel":
        for module in (self.autoencoder, self.text_encoder, self.transformer):
            module.to(device)
        self._adapter = None  # the adapter caches weights on the old device
        return self

    @property
    def adapter(self):
        if self._adapter is None:
            from ...adapters.wan import WanAdapter

            self._adapter = WanAdapter(self.transformer)
        return self._adapter

    @torch.inference_mode()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.text_encoder(self.tokenizer(prompts))

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        sampler,
        image: np.ndarray | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        negative_prompt: str = "",
        callback: StepCallback | None = None,
    ) -> tuple[np.ndarray, SampleResult]:
        """A (F, 32, 32, 3) float clip in [0, 1] and the sampler's result.

        ``image``: an optional (32, 32, 3) first frame in [0, 1]; its latent frame is held clean (I2V).
        """
        config = self.config
        guidance = config.guidance_scale if guidance_scale is None else guidance_scale
        adapter = self.adapter
        grid = adapter.token_grid(config.latent_shape)
        noise = torch.randn(config.latent_shape, generator=torch.Generator().manual_seed(seed))
        latents = noise.clone()
        frozen = None
        if image is not None:
            image = torch.as_tensor(np.asarray(image, dtype=np.float32))
            if tuple(image.shape) != (config.size, config.size, 3):
                raise ValueError(f"image must be ({config.size}, {config.size}, 3), got {tuple(image.shape)}")
            first = self.autoencoder.encode(image.permute(2, 0, 1)[None, :, None])  # (1, C, 1, h, w)
            latents[:, :, :1] = first
            frozen = grid.frame_mask([0])
        embeds = self.encode_prompts([prompt, negative_prompt])
        conditioning = Conditioning(embeds[:1], embeds[1:], guidance_scale=guidance)
        schedule = FlowMatchSchedule(steps or config.steps, config.shift)
        result = sampler.sample(adapter, grid.patchify(latents), grid, conditioning, schedule, frozen=frozen,
                                callback=callback)
        video = self.autoencoder.decode(grid.unpatchify(result.tokens))  # (1, 3, F, H, W)
        return video[0].permute(1, 2, 3, 0).numpy(), result  # (F, H, W, 3)
