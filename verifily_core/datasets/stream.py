"""The row order of streamed training (``training.streaming``): read lazily, shuffled in windows,
sharded by rank, resumable at any row.

A split is read line by line and never held whole. Its rows form an endless stream: epoch 0,
then epoch 1, ... Within an epoch the rows are cut into consecutive windows of
``shuffle_buffer`` rows and each window is permuted by a generator seeded with
``(seed, epoch, window)`` (``shuffle_buffer: 0`` keeps the file order). Every row of the
stream has a position ``p`` (``epoch * rows_per_epoch + index``); with ``world_size`` processes,
process ``rank`` takes the positions ``p = start + rank + j * world_size``. At most one window
of raw lines (and the row being parsed) is held. Resuming at position ``start`` reads the lines
before its window without parsing them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from verifily_core.datasets.streaming import HashedLines
from verifily_core.errors import DataError
from verifily_core.files import parse_line

LineSource = Callable[[], Iterable[tuple[int, "str | None"]]]


def window_order(size: int, seed: int, epoch: int, window: int) -> list[int]:
    """The permutation of one window of ``size`` rows (deterministic across processes and runs)."""
    order = list(range(size))
    random.Random(f"{seed}:{epoch}:{window}").shuffle(order)
    return order


class RowStream:
    """The endless, seeded, sharded stream of one JSONL split (see the module docstring).

    :param path: the split's file.
    :param rows_per_epoch: its number of rows (non-blank lines), from the dataset's manifest.
    :param lines: where the numbered lines come from (default: the file, read in blocks); tests
        pass a counting source.
    """

    def __init__(self, path: str | Path, rows_per_epoch: int, seed: int, shuffle_buffer: int, rank: int = 0,
                 world_size: int = 1, lines: LineSource | None = None) -> None:
        if rows_per_epoch < 1:
            raise DataError(f"{path}: no rows to train on")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.path = Path(path)
        self.rows_per_epoch = rows_per_epoch
        self.seed = seed
        self.window = max(1, shuffle_buffer)
        self.shuffled = shuffle_buffer > 0
        self.rank, self.world_size = rank, world_size
        self._lines = lines or (lambda: HashedLines(self.path, hash=False))

    def rows(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position, row)`` of this process's rows from global position ``start`` on, forever."""
        for position, _, row in self.located_rows(start):
            yield position, row

    def located_rows(self, start: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """:meth:`rows` with each row's line number in :attr:`path`: ``(position, line, row)``."""
        first = start + self.rank  # this process's first position
        epoch = first // self.rows_per_epoch
        while True:
            yield from self._epoch(epoch, first)
            epoch += 1

    def _epoch(self, epoch: int, first: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        base = epoch * self.rows_per_epoch
        step = self.world_size
        skip_windows = max(0, first - base) // self.window  # windows wholly before ``first``
        window: list[tuple[int, str | None]] = []
        index = 0
        count = 0
        for lineno, text in self._lines():
            if text is not None and not text.strip():
                continue
            count += 1
            if index < skip_windows:
                if count % self.window == 0:
                    index += 1
                continue
            window.append((lineno, text))
            if len(window) == self.window:
                yield from self._emit(window, epoch, index, base, first, step)
                window, index = [], index + 1
        if window:
            yield from self._emit(window, epoch, index, base, first, step)
        if count != self.rows_per_epoch:
            raise DataError(f"{self.path}: has {count} rows, the dataset recorded {self.rows_per_epoch}; "
                            "the file changed since it was verified")

    def _emit(self, window: list[tuple[int, str | None]], epoch: int, index: int, base: int, first: int,
              step: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        order = window_order(len(window), self.seed, epoch, index) if self.shuffled else range(len(window))
        start = base + index * self.window
        for offset, slot in enumerate(order):
            position = start + offset
            if position < first or (position - first) % step:
                continue
            lineno, text = window[slot]
            row, problem = parse_line(text, self.path, lineno)
            if problem or row is None:
                raise DataError(problem or f"{self.path}:{lineno}: no row")
            yield position, lineno, row


def stream_for(dataset: Any, split: str, seed: int, shuffle_buffer: int, rank: int = 0,
               world_size: int = 1) -> RowStream:
    """The :class:`RowStream` of a resolved dataset version's ``split``."""
    data_file = dataset.file(split)
    if data_file is None:
        raise DataError(f"dataset {dataset.ref or dataset.root} has no '{split}' split")
    return RowStream(dataset.split_path(split), data_file.num_rows, seed, shuffle_buffer, rank, world_size)


class SplitRows:
    """A split's rows as an iterable that streams them again on each pass (never a list): what a
    task's ``trainer_class`` receives when training streams (e.g. to count labels)."""

    def __init__(self, dataset: Any, split: str) -> None:
        self.dataset, self.split = dataset, split

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.dataset.iter_rows(self.split)
