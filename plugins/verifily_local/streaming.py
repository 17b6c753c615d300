"""Streamed training data of the local backend (``training.streaming``): rows read and tokenized
lazily, the position reached recorded in every checkpoint, and a resume that starts there.

:class:`StreamedFeatures` is a ``torch`` ``IterableDataset`` over a
:class:`~verifily_core.datasets.stream.RowStream`: it takes ``chunk`` rows at a time, lets the
task turn them into features (``Task.prepare_features`` on that chunk) and yields them. The rows
a checkpoint has trained on are ``global_step x batch_size x gradient_accumulation_steps x
world_size`` (every batch of the endless stream is full); :class:`StreamStateCallback` writes that
count into ``checkpoint-N/verifily_stream.json`` before the checkpoint's manifest, and a resumed
run starts its stream at that position (:func:`read_stream_state`), reading the lines before its
window without parsing or tokenizing them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from verifily_core.datasets.stream import RowStream
from verifily_core.errors import DataError, TrainingError
from verifily_core.files import read_json, write_json

STATE_FILE = "verifily_stream.json"
STATE_VERSION = 1


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process from ``RANK``/``WORLD_SIZE`` (torchrun sets them); ``(0, 1)`` alone."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0) if size > 1 else 0
    return rank, size


class StreamedFeatures(torch.utils.data.IterableDataset):
    """Features of a split's rows, prepared ``chunk`` rows at a time as training asks for them.

    ``prepare(rows)`` returns ``(features, stats)`` (a task's ``prepare_features``); the stats'
    ``rows`` and ``truncated`` are summed over the rows prepared so far (:attr:`stats`).
    ``start`` is the global position the stream starts at (a resume's rows consumed).
    """

    def __init__(self, stream: RowStream, prepare: Callable[[list[dict[str, Any]]], tuple[list[Any], dict[str, Any]]],
                 chunk: int, start: int = 0) -> None:
        super().__init__()
        self.stream, self.prepare, self.chunk, self.start = stream, prepare, max(1, chunk), start
        self.stats = {"rows": 0, "truncated": 0}
        self.on_start: Callable[[], None] | None = None
        """Called once, when the first row is asked for (a resume restores the checkpoint's random
        state there: the data loader draws its seed from the global generator before)."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.on_start is not None:
            self.on_start()
            self.on_start = None
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        for _, line, row in self.stream.located_rows(self.start):
            rows.append(row)
            lines.append(line)
            if len(rows) == self.chunk:
                yield from self._prepared(rows, lines)
                rows, lines = [], []

    def _prepared(self, rows: list[dict[str, Any]], lines: list[int]) -> list[Any]:
        try:
            feats, stats = self.prepare(rows)
        except DataError as exc:
            raise self._located(rows, lines, exc) from None
        self.stats["rows"] += stats.get("rows", len(rows))
        self.stats["truncated"] += stats.get("truncated", 0)
        return feats

    def _located(self, rows: list[dict[str, Any]], lines: list[int], error: DataError) -> DataError:
        """``error`` (a task's, naming a row by its place in the chunk) as ``file:line: ...`` of the
        first row that fails on its own; ``error`` itself when none does."""
        for row, line in zip(rows, lines):
            try:
                self.prepare([row])
            except DataError as alone:
                what = re.sub(r"^[\w ]*\brow 1: ", "", str(alone), count=1)
                return DataError(f"{self.stream.path}:{line}: {what}")
        return error


def rows_trained(args: Any, global_step: int) -> int:
    """Rows of the stream (all processes together) that ``global_step`` optimizer steps trained on."""
    return global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


class StreamStateCallback(TrainerCallback):
    """Writes ``verifily_stream.json`` (``rows_consumed``, ``world_size``, ``seed``, ``shuffle_buffer``)
    into each checkpoint; listed before the callback that writes the checkpoint's manifest, so the
    manifest covers it."""

    def __init__(self, seed: int, shuffle_buffer: int) -> None:
        self.seed, self.shuffle_buffer = seed, shuffle_buffer

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_json(folder / STATE_FILE, {
                "format_version": STATE_VERSION, "rows_consumed": rows_trained(args, state.global_step),
                "global_step": state.global_step, "world_size": args.world_size, "seed": self.seed,
                "shuffle_buffer": self.shuffle_buffer,
            }, sort_keys=True)


def read_stream_state(checkpoint: str | None) -> int:
    """The stream position a resumed run starts at: the ``rows_consumed`` of ``checkpoint`` (0 without one).

    :raises TrainingError: the checkpoint has no stream state (it was not written by a streamed run).
    """
    if checkpoint is None:
        return 0
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"{checkpoint}: no {STATE_FILE} (the checkpoint was not written by a streamed run); "
                            "train afresh without --resume")
    return int(read_json(path)["rows_consumed"])


def keep_rank_shards(trainer: Any) -> None:
    """With several processes, accelerate wraps an ``IterableDataset`` in ``IterableDatasetShard``,
    which would shard the already rank-sharded stream again: make that wrapper a passthrough (as
    transformers does for its rank-aware batch sampler). Each process then trains on its own rows."""
    original = trainer.get_train_dataloader

    def get_train_dataloader() -> Any:
        loader = original()
        shard = getattr(loader, "dataset", None)
        if type(shard).__name__ == "IterableDatasetShard":
            shard.num_processes, shard.process_index = 1, 0
        return loader

    trainer.get_train_dataloader = get_train_dataloader
