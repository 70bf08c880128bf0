"""The tiny model's autoencoder: each 32×32 RGB frame ↔ a 16×16×4 latent.

Frames are coded independently (no temporal compression), so latent frame 0 is exactly the
conditioning image's code and first-frame conditioning holds whole tokens clean, as in Wan 2.2 TI2V.
A diffusion model on these latents sees 4× fewer positions than on pixels and leaves crisp edges to
the convolutional decoder — the patch-mosaic artefacts of a pixel-space DiT at this size go away.
The decoder is trained on slightly noisy codes so imperfect generated latents still decode cleanly.
Latents are normalised with the training set's per-channel mean and std (``latents_mean/std``),
like Wan's VAE.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class TinyAutoencoder(nn.Module):
    def __init__(self, latent_channels: int = 4, width: int = 32):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            _block(3, width),
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # 16×16
            _block(width, width),
            _block(width, width),
            nn.Conv2d(width, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1), nn.SiLU(),
            _block(width, width),
            _block(width, width),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(width, width),  # 32×32
            _block(width, width),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        self.register_buffer("latents_mean", torch.zeros(latent_channels))
        self.register_buffer("latents_std", torch.ones(latent_channels))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, 32, 32) in [0, 1] → normalised latents (B, C, F, 16, 16)."""
        b, _, f, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * f, 3, h, w) * 2 - 1
        z = self.encoder(frames)
        z = (z - self.latents_mean[:, None, None]) / self.latents_std[:, None, None]
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, F, 16, 16) → (B, 3, F, 32, 32) in [0, 1] (clamped)."""
        b, c, f, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * f, c, h, w)
        z = z * self.latents_std[:, None, None] + self.latents_mean[:, None, None]
        frames = (self.decoder(z) + 1) / 2
        return frames.clamp(0, 1).reshape(b, f, 3, *frames.shape[2:]).transpose(1, 2)
