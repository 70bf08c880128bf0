"""hsa_core: flow-matching sampling with Heterogeneous Step Allocation for video DiTs.

A library with no web, queue or environment dependencies: schedules, the reference Euler sampler,
the HSA sampler, the per-layer K/V cache, the cost model and the model adapters.
"""

from .adapters import DenoiserAdapter, TokenGrid, available_adapters, build_adapter, get_adapter_class
from .allocation import AllocationPlan, assign_phases, solve_divisors
from .cost_model import CostModel, calibrate
from .errors import (
    BudgetInfeasibleError,
    ConfigError,
    GridError,
    HSAError,
    UnknownAdapterError,
    UnsupportedModelError,
)
from .kv_cache import TokenKVCache, kv_cache_bytes
from .samplers import Conditioning, EulerSampler, HSAConfig, HSASampler, Sampler, SampleResult, StepStats
from .schedule import FlowMatchSchedule, shift_sigmas

__version__ = "0.1.0"

__all__ = [
    "AllocationPlan",
    "BudgetInfeasibleError",
    "Conditioning",
    "ConfigError",
    "CostModel",
    "DenoiserAdapter",
    "EulerSampler",
    "FlowMatchSchedule",
    "GridError",
    "HSAConfig",
    "HSAError",
    "HSASampler",
    "SampleResult",
    "Sampler",
    "StepStats",
    "TokenGrid",
    "TokenKVCache",
    "UnknownAdapterError",
    "UnsupportedModelError",
    "assign_phases",
    "available_adapters",
    "build_adapter",
    "calibrate",
    "get_adapter_class",
    "kv_cache_bytes",
    "shift_sigmas",
    "solve_divisors",
]
