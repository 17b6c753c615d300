"""Small statistics helpers that need only NumPy (no torch): paired bootstrap of a mean difference."""

from __future__ import annotations

from typing import Sequence


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 1000,
                        seed: int = 42) -> dict[str, float | bool]:
    """Delta ``mean(b) - mean(a)`` over paired rows with a percentile bootstrap interval.

    Rows are resampled with replacement (the same indices for both runs). ``significant`` is
    true when the interval excludes zero.
    """
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired bootstrap needs two non-empty sequences of equal length")
    diff = y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(means, [alpha, 1 - alpha]))
    return {"delta": float(diff.mean()), "low": low, "high": high, "level": level,
            "significant": bool(low > 0 or high < 0), "n": int(diff.size)}
