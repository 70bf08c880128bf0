"""A velocity field known in closed form, for testing samplers without a network.

Each token coordinate has Gaussian data x₀ ~ N(μ, s²). Under x_σ = (1 − σ)·x₀ + σ·ε the exact
flow-matching velocity is linear in x:

    Var(σ) = (1 − σ)²·s² + σ²
    v(x, σ) = (σ − (1 − σ)·s²) / Var(σ) · (x − (1 − σ)·μ) − μ

and the probability-flow ODE started at x₁ = ε has the exact solution
x_σ = (1 − σ)·μ + √Var(σ) · ε, so x₀ = μ + s·ε. Tokens with s = 0 move in a straight line (their
velocity never changes); larger s bends the trajectory — heterogeneous dynamics on purpose.

Tokens are independent, so a subset forward is trivially exact; the adapter counts how many token
rows it evaluated, which is what budget tests need.
"""

from __future__ import annotations

import torch

from .base import TokenGrid


class GaussianFlowAdapter:
    num_layers = 1
    width = 1

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, patch: tuple[int, int, int] = (1, 1, 1)):
        """mean, std: (B, N, D) per token and channel."""
        self.mean = mean.to(torch.float32)
        self.std = std.to(torch.float32).expand_as(self.mean)
        self.patch = patch
        self.evaluated_tokens = 0  # token rows computed, summed over calls

    def token_grid(self, latent_shape: tuple[int, ...]) -> TokenGrid:
        return TokenGrid(tuple(latent_shape), self.patch)

    def prepare_branch(self, grid: TokenGrid, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return encoder_hidden_states  # a scalar multiplier on the field, so CFG has something to combine

    def new_kv_cache(self, grid: TokenGrid, dtype: torch.dtype | None = None, location: str = "device") -> None:
        return None

    def exact_solution(self, noise: torch.Tensor) -> torch.Tensor:
        """x₀ reached by the exact ODE from x₁ = noise."""
        return self.mean + self.std * noise

    def velocity(self, x, sigma, branch, active=None, kv_cache=None):
        mean, std = self.mean, self.std
        if active is not None:
            mean, std = mean[:, active], std[:, active]
        sigma = sigma.to(torch.float32)
        sigma = sigma[:, None, None] if sigma.ndim == 1 else sigma[..., None]  # (B, 1|a, 1)
        variance = (1 - sigma) ** 2 * std**2 + sigma**2
        velocity = (sigma - (1 - sigma) * std**2) / variance * (x - (1 - sigma) * mean) - mean
        self.evaluated_tokens += x.shape[0] * x.shape[1]
        return velocity * branch.reshape(-1, 1, 1)
