"""Typed errors raised by hsa_core.

Every error carries a stable ``code`` that services can put into API responses::

    HSAError
    ├── ConfigError              code="invalid_config"     a setting is outside its domain
    │   └── BudgetInfeasibleError code="budget_infeasible" the budget is below what the schedule allows
    ├── GridError                code="invalid_grid"       the latent cannot be patchified by the model
    ├── UnknownAdapterError      code="unknown_adapter"    no adapter registered under that name
    ├── UnsupportedModelError    code="unsupported_model"  the checkpoint uses a feature the adapter lacks
    ├── ModelNotFoundError       code="model_not_found"    no usable checkpoint where the weights should be
    ├── MissingDependencyError   code="missing_dependency" an optional Python package the model needs is absent
    └── InsufficientMemoryError  code="insufficient_memory" the K/V cache and the model do not fit on the device

``ConfigError`` and ``GridError`` are also ``ValueError``s and ``UnknownAdapterError`` is a
``KeyError``, so callers that only know the builtin exceptions still catch them.
"""

from __future__ import annotations


class HSAError(Exception):
    """Base class of every error raised by hsa_core."""

    code = "hsa_error"


class ConfigError(HSAError, ValueError):
    """A sampler, schedule or cost-model setting is outside its valid domain."""

    code = "invalid_config"


class BudgetInfeasibleError(ConfigError):
    """The requested budget is below the smallest one the schedule can honour."""

    code = "budget_infeasible"

    def __init__(self, message: str, min_budget: float):
        super().__init__(message)
        self.min_budget = min_budget


class GridError(HSAError, ValueError):
    """The latent's shape cannot be split into the model's patches or positions."""

    code = "invalid_grid"


class UnknownAdapterError(HSAError, KeyError):
    """No denoiser adapter is registered under the requested name."""

    code = "unknown_adapter"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnsupportedModelError(HSAError):
    """The checkpoint needs a model feature this adapter does not implement."""

    code = "unsupported_model"


class ModelNotFoundError(HSAError):
    """A model directory is missing or does not hold a diffusers-format checkpoint."""

    code = "model_not_found"


class MissingDependencyError(HSAError):
    """A Python package the requested model needs is not installed."""

    code = "missing_dependency"


class InsufficientMemoryError(HSAError):
    """The planned K/V cache does not fit in the memory the device has left."""

    code = "insufficient_memory"
