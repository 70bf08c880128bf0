"""Shifted flow-matching schedule.

Rectified flow: x_σ = (1 − σ)·x₀ + σ·ε with σ = 1 pure noise, and the model predicts the velocity
v = ε − x₀. Sampling walks σ from 1 to 0 through T steps; the shift s bends the schedule towards
high noise with σ ← s·σ / (1 + (s − 1)·σ).

We reproduce diffusers' ``FlowMatchEulerDiscreteScheduler`` (static shift) exactly, because users
compare our outputs with theirs: it spaces T points linearly between the *shifted* ends of the
training schedule, σ_max = shift(1) = 1 and σ_min = shift(1 / num_train_timesteps), and then shifts
those points once more. Timesteps passed to the model are σ · num_train_timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError


def shift_sigmas(sigmas: np.ndarray | float, shift: float) -> np.ndarray | float:
    """σ ← s·σ / (1 + (s − 1)·σ); the identity for s = 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class FlowMatchSchedule:
    """σ_0 = 1 > σ_1 > … > σ_T = 0 for T = ``steps`` Euler steps.

    Attributes:
        steps: number of model evaluations per token in the reference sampler (default 40).
        shift: schedule shift s (Wan 2.1 uses 3.0 at 480p, 5.0 at 720p).
        num_train_timesteps: the model's timestep scale (timestep = σ · this).
    """

    steps: int = 40
    shift: float = 3.0
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"steps must be an integer ≥ 1, got {self.steps!r}")
        if not (self.shift > 0 and np.isfinite(self.shift)):
            raise ConfigError(f"shift must be a finite number > 0, got {self.shift!r}")
        if self.num_train_timesteps < 1:
            raise ConfigError(f"num_train_timesteps must be ≥ 1, got {self.num_train_timesteps!r}")

    @property
    def sigmas(self) -> torch.Tensor:
        """(T + 1,) float32, from 1 down to exactly 0."""
        sigma_min = float(np.float32(shift_sigmas(np.float32(1.0 / self.num_train_timesteps), self.shift)))
        t_max, t_min = 1.0 * self.num_train_timesteps, sigma_min * self.num_train_timesteps
        points = np.linspace(t_max, t_min, self.steps) / self.num_train_timesteps
        sigmas = torch.from_numpy(shift_sigmas(points, self.shift)).to(torch.float32)
        return torch.cat([sigmas, torch.zeros(1)])

    @property
    def timesteps(self) -> torch.Tensor:
        """(T,) float32 model timesteps σ_i · num_train_timesteps for i < T."""
        return self.sigmas[:-1] * self.num_train_timesteps


@dataclass(frozen=True)
class SigmaSchedule:
    """A schedule given by its σ's, for models whose scheduler shifts them some other way.

    LTX-2's diffusers scheduler shifts resolution-dependently (μ from the number of video tokens,
    exponential time shift, optionally stretched to a terminal σ); ``hsa_core.models.ltx2`` runs the
    checkpoint's own scheduler once and hands its σ's to the samplers here, so both loops step through
    the very same float32 values.
    """

    values: tuple[float, ...]  # σ_0 = 1 > … > σ_T = 0, T + 1 values (float32-representable)
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        values = self.values
        if len(values) < 2 or values[-1] != 0 or any(a <= b for a, b in zip(values, values[1:])):
            raise ConfigError(f"sigmas must decrease strictly to a final 0, got {values!r}")

    @property
    def steps(self) -> int:
        return len(self.values) - 1

    @property
    def sigmas(self) -> torch.Tensor:
        """(T + 1,) float32."""
        return torch.tensor(self.values, dtype=torch.float32)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.sigmas[:-1] * self.num_train_timesteps
