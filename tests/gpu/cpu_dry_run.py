"""A dry run of the GPU checks on the CPU: ``python -m pytest -p tests.gpu.cpu_dry_run tests/gpu``.

It runs the checks' numerics on the CPU (``HSA_GPU_TESTS_DEVICE=cpu``) so a broken test shows up before
GPU minutes are spent on it; checks of CUDA itself (its memory, pinned copies) skip. CPU numerics are not
CUDA's: a tolerance that passes here is only a hint for the GPU.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HSA_GPU_TESTS_DEVICE", "cpu")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # undo tests/conftest.py's "needs a CUDA device" skip, for this folder's tests only
    for item in items:
        if Path(__file__).parent not in Path(item.path).parents:
            continue
        item.own_markers = [marker for marker in item.own_markers
                            if not (marker.name == "skip" and marker.kwargs.get("reason") == "needs a CUDA device")]
