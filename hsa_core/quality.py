"""Fidelity of a clip against a reference clip: PSNR and mean per-frame SSIM (scikit-image).

Used by the Pareto benchmark (each method against plain Euler at 40 steps) and by the workers'
shadow reference (a served video against the same job re-run at full budget).
"""

from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 100.0  # identical clips have infinite PSNR; a finite cap keeps means and histograms usable


def clip_fidelity(clip: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, mean SSIM over frames) of ``clip`` against ``reference``, both (F, H, W, 3) in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if clip.shape != reference.shape:
        raise ValueError(f"clip shape {clip.shape} differs from the reference's {reference.shape}")
    clip, reference = np.clip(clip, 0, 1).astype(np.float64), np.clip(reference, 0, 1).astype(np.float64)
    if np.array_equal(clip, reference):
        return PSNR_CAP_DB, 1.0
    psnr = peak_signal_noise_ratio(reference, clip, data_range=1.0)
    ssim = float(np.mean([structural_similarity(r, c, channel_axis=-1, data_range=1.0)
                          for r, c in zip(reference, clip)]))
    return float(min(psnr, PSNR_CAP_DB)), ssim
