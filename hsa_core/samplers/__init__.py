"""Samplers behind one interface: the plain Euler reference and HSA."""

from .base import Conditioning, GuidedDenoiser, SampleResult, Sampler, StepStats
from .euler import EulerSampler
from .hsa import HSAConfig, HSASampler

__all__ = [
    "Conditioning",
    "EulerSampler",
    "GuidedDenoiser",
    "HSAConfig",
    "HSASampler",
    "SampleResult",
    "Sampler",
    "StepStats",
]
