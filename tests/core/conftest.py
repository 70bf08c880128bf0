"""Fixtures over the tiny Wan components of tiny.py."""

import copy

import pytest
import torch

from .tiny import LATENT_SHAPE, TEXT_SHAPE, build_tiny_wan


@pytest.fixture(scope="session")
def tiny_wan_weights():
    return build_tiny_wan()


@pytest.fixture
def tiny_wan(tiny_wan_weights):
    """A fresh copy per test: the adapter installs its processors on the model it wraps."""
    return copy.deepcopy(tiny_wan_weights)


@pytest.fixture
def wan_adapter(tiny_wan):
    from hsa_core.adapters.wan import WanAdapter

    return WanAdapter(tiny_wan)


@pytest.fixture
def job():
    """Noise latents and prompt / negative-prompt embeddings for one job."""
    generator = torch.Generator().manual_seed(1)
    return {
        "latents": torch.randn(LATENT_SHAPE, generator=generator),
        "prompt": torch.randn(TEXT_SHAPE, generator=generator),
        "negative": torch.randn(TEXT_SHAPE, generator=generator),
    }
