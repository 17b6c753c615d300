"""Snapshots of a run's trainable weights during training (``training.attribution_checkpoints``):
the files a compute backend writes and ``verifily attribute`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = "snapshots"
INDEX = "snapshots.json"
"""``[{"step", "lr", "file"}]``: each snapshot's optimizer step, the learning rate of that step,
and its ``safetensors`` file (the PEFT state dict: LoRA and head weights) in :data:`FOLDER`."""


def file_name(step: int) -> str:
    """The snapshot file of ``step``."""
    return f"step-{step:06d}.safetensors"


def read_snapshots(run_path: str | Path) -> list[dict[str, Any]]:
    """The run's snapshots by step, each with its ``path`` (empty when it kept none)."""
    from verifily_core.files import read_json

    index = Path(run_path) / FOLDER / INDEX
    if not index.is_file():
        return []
    return [{**e, "path": index.parent / e["file"]} for e in sorted(read_json(index), key=lambda e: e["step"])]
