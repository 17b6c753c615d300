"""Seeded percentile bootstrap, vectorised with NumPy.

Algorithm (documented in ``docs/evaluation.md``; tests recompute it by hand): for a set of
``n`` rows, ``rng = numpy.random.default_rng([seed, key_int])`` where ``key_int`` is the
first 4 bytes (big-endian) of ``sha256(key)`` and ``key`` names the set (``overall``, a slice
name; ``|gold`` appended for gold metrics). Resample ``b`` is the row positions
``rng.integers(0, n, size=(resamples, n))[b]`` (drawn in chunks of whole resamples, which
yields the same numbers). The metric is computed on every resample; the interval is
``numpy.nanpercentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])`` (linear
interpolation; resamples where the metric is undefined are left out).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Iterator

import numpy as np

CHUNK_CELLS = 4_000_000  # resample positions held in memory at once
ONE_HOT_MIN_COLUMNS = 16  # wider one-hot statistics are summed by counting codes


def rng_for(seed: int, key: str) -> np.random.Generator:
    """The generator for one row set: ``default_rng([seed, first 4 bytes of sha256(key)])``."""
    key_int = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big")
    return np.random.default_rng([int(seed), key_int])


def resample_chunks(rng: np.random.Generator, n: int, resamples: int) -> Iterator["Resample"]:
    """Yield the resamples in chunks; together they are ``rng.integers(0, n, (resamples, n))``."""
    if n <= 0 or resamples <= 0:
        return
    step = max(1, min(resamples, CHUNK_CELLS // n))
    for start in range(0, resamples, step):
        yield Resample(rng.integers(0, n, size=(min(step, resamples - start), n)))


class Resample:
    """A chunk of resamples: ``positions`` of shape ``(b, n)``; counts derived on demand."""

    def __init__(self, positions: np.ndarray) -> None:
        self.positions = positions

    @property
    def size(self) -> int:
        """Number of resamples in the chunk."""
        return int(self.positions.shape[0])

    @cached_property
    def counts(self) -> np.ndarray:
        """How often each row is drawn in each resample, shape ``(b, n)``."""
        b, n = self.positions.shape
        out = np.empty((b, n))
        for row, positions in zip(out, self.positions):  # per-row bincount beats one flat bincount
            row[:] = np.bincount(positions, minlength=n)
        return out

    def totals(self, stats: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Column sums of ``stats`` (shape ``(n, d)``) over each resample: shape ``(b, d)``.

        ``codes`` (the column of the single 1 per row, ``-1`` for an all-zero row) is a faster
        equivalent for wide one-hot statistics.
        """
        if codes is None:
            return self.counts @ stats
        b, d = self.size, stats.shape[1]
        drawn = codes[self.positions]
        keep = drawn >= 0
        flat = (drawn + (np.arange(b) * d)[:, None])[keep]
        return np.bincount(flat, minlength=b * d).reshape(b, d).astype(float)


def one_hot_codes(stats: np.ndarray) -> np.ndarray | None:
    """Codes for :meth:`Resample.totals` when ``stats`` is wide and one-hot (rows of one 1 or all 0)."""
    if stats.ndim != 2 or stats.shape[1] < ONE_HOT_MIN_COLUMNS or not stats.size:
        return None
    if not np.isin(stats, (0.0, 1.0)).all() or (stats.sum(axis=1) > 1).any():
        return None
    return np.where(stats.any(axis=1), stats.argmax(axis=1), -1)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    """The percentile interval of bootstrap values (``None`` when no value is defined)."""
    values = np.asarray(values, dtype=float)
    if not values.size or np.isnan(values).all():
        return None
    lo, hi = np.nanpercentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def finite(value: Any) -> float | None:
    """A metric value as a float, or ``None`` when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
