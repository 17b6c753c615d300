"""Batches of similar length for prediction: rows sorted by length (longest first, so a batch
that does not fit in memory fails at once), cut into batches, results put back in input order.

With dynamic padding every row of a batch is padded to its longest, so batches of rows of
similar length spend little compute on padding; the results do not depend on the order.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def _longest_first(lengths: Sequence[int]) -> list[int]:
    """Row indices by length, longest first (ties in input order)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of ``batch_size``, longest rows first (ties in input order)."""
    order = _longest_first(lengths)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Row indices, longest rows first (ties in input order), in batches of at most
    ``max_tokens`` padded tokens (rows x the batch's longest row; at least one row each), so
    batches of short rows hold more of them and each costs about the same memory."""
    batches: list[list[int]] = []
    for i in _longest_first(lengths):
        if batches and (len(batches[-1]) + 1) * max(lengths[batches[-1][0]], 1) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def map_sorted(lengths: Sequence[int], batch_size: int, run: Callable[[list[int]], Sequence[T]],
               label: str = "") -> list[T]:
    """``run(indices)`` on each batch of :func:`length_sorted_batches`, its results (one per
    index) returned in input order; with ``label``, a progress bar of the rows done (on a
    terminal, see :func:`verifily_core.console.progress_bar`)."""
    from verifily_core.console import progress_bar

    out: list[T | None] = [None] * len(lengths)
    bar = progress_bar(len(lengths), label) if label else None
    try:
        for batch in length_sorted_batches(lengths, batch_size):
            results = run(batch)
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for a batch of {len(batch)} rows")
            for i, result in zip(batch, results):
                out[i] = result
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return out  # type: ignore[return-value]
