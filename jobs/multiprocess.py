"""Prometheus multiprocess mode set-up. Kept apart from ``jobs.metrics``: the directory must be
chosen before prometheus_client is first imported, which importing the metrics module does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: Path) -> Path:
    """Wipe and create ``path`` and point this process and its children at it (stale files of dead
    processes would otherwise be summed into every scrape)."""
    if "prometheus_client" in __import__("sys").modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("prometheus_client was imported before the multiprocess directory was set")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
