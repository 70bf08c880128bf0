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


class _Coder(nn.Module):
    """A linear 1×1 map plus a residual conv stack: the linear path learns the colours of flat
    regions in a few steps (a per-position PCA), the convs learn edges and patterns on top."""

    def __init__(self, cin: int, cout: int, width: int):
        super().__init__()
        self.linear = nn.Conv2d(cin, cout, 1)
        self.convs = nn.Sequential(
            nn.Conv2d(cin, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, cout, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.convs(x)


class TinyAutoencoder(nn.Module):
    def __init__(self, latent_channels: int = 4, width: int = 64):
        super().__init__()
        self.latent_channels = latent_channels
        # 2×2 pixel blocks become 12 channels losslessly; all learned work happens at 16×16
        self.encoder = nn.Sequential(nn.PixelUnshuffle(2), _Coder(12, latent_channels, width))
        self.decoder = nn.Sequential(_Coder(latent_channels, 12, width), nn.PixelShuffle(2))
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
