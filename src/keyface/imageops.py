"""Small image helpers used inside the codec loop (kept free of torch and of I/O)."""

from __future__ import annotations

import numpy as np

PSNR_CAP = 100.0


def mse(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(d * d))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (RGB), capped at ``PSNR_CAP`` for identical images."""
    m = mse(a, b)
    if m <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * float(np.log10(255.0**2 / m)))
