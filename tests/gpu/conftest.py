"""Fixtures of the GPU checks. Every module here is marked ``gpu``: tests/conftest.py skips them without CUDA."""

import pytest
import torch

from .medium import DEVICE


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def cuda_only():
    """For checks of CUDA itself (its memory, its streams): skipped in a CPU dry run."""
    if DEVICE.type != "cuda":
        pytest.skip("checks CUDA's own memory or copies")


@pytest.fixture
def no_tf32():
    """float32 comparisons in true float32: cuDNN convolutions (diffusers' patch embedding) default to TF32.

    Through the legacy flags only: their setters keep torch's per-backend settings consistent, while a write
    through the per-backend API makes every later read of a legacy flag raise (torch ≥ 2.9)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
