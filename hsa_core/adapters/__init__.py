"""Denoiser adapters and their registry.

Adapters are looked up by name and imported lazily, so importing hsa_core does not import
diffusers until a model is actually wrapped.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UnknownAdapterError
from .base import DenoiserAdapter, TokenGrid

# name → "module:class", relative to this package.
_REGISTRY: dict[str, str] = {
    "wan": ".wan:WanAdapter",
    "ltx2": ".ltx2:LTX2Adapter",
    "gaussian": ".analytic:GaussianFlowAdapter",
}


def available_adapters() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter_class(name: str) -> type:
    """The adapter class registered under ``name``; UnknownAdapterError lists the known names."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownAdapterError(
            f"unknown adapter {name!r}; known adapters: {', '.join(available_adapters())}"
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name, __name__), class_name)


def build_adapter(name: str, *args: Any, **kwargs: Any) -> DenoiserAdapter:
    return get_adapter_class(name)(*args, **kwargs)


__all__ = ["DenoiserAdapter", "TokenGrid", "available_adapters", "build_adapter", "get_adapter_class"]
