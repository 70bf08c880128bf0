"""Samplers behind one interface: the plain Euler reference and HSA."""

from .base import Conditioning, GuidanceRescale, GuidanceTerm, GuidedDenoiser, Sampler, SampleResult, StepStats
from .euler import EulerSampler
from .hsa import HSAConfig, HSASampler

__all__ = [
    "Conditioning",
    "EulerSampler",
    "GuidanceRescale",
    "GuidanceTerm",
    "GuidedDenoiser",
    "HSAConfig",
    "HSASampler",
    "SampleResult",
    "Sampler",
    "StepStats",
]
