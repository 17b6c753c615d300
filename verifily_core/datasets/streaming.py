"""Streaming reads of data files: block-wise hashing, lines split from the same blocks, progress.

A file is read in fixed-size blocks; each block is hashed once and cut into lines, so
hashing costs what ``sha256sum`` costs and memory stays at one block plus one line,
whatever the file size. Files larger than :data:`PROGRESS_BYTES` get a progress bar on
stderr (on a terminal).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Generator, Iterator

from verifily_core.hashing import PREFIX

BLOCK = 1 << 20
PROGRESS_BYTES = 8 << 20  # files larger than this get a progress bar


class Progress:
    """A progress bar in bytes on stderr for large files (:func:`verifily_core.console.progress_bar`:
    on a terminal only, never with ``--quiet``); does nothing for small ones."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self._bar: Any = None
        size = path.stat().st_size
        if size > PROGRESS_BYTES:
            from verifily_core.console import progress_bar

            self._bar = progress_bar(size, label or f"Reading {path.name}", unit="B")

    def update(self, n: int) -> None:
        """Advance by ``n`` bytes."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def hash_file(path: str | Path, label: str | None = None) -> str:
    """``sha256:<hex>`` of a file read in blocks, with a progress bar for large files."""
    p = Path(path)
    h = hashlib.sha256()
    bar = Progress(p, label)
    try:
        with open(p, "rb", buffering=0) as fh:
            while block := fh.read(BLOCK):
                h.update(block)
                bar.update(len(block))
    finally:
        bar.close()
    return PREFIX + h.hexdigest()


class HashedLines:
    """Iterate ``(line_number, text)`` of a UTF-8 file while hashing every byte of it.

    Each block's complete lines are decoded at once and split; ``text`` is ``None`` for a
    line that is not valid UTF-8. Lines come without their newline. After a complete
    iteration :attr:`sha256` holds ``sha256:<hex>`` of the whole file (with ``hash=False``
    nothing is hashed, for plain reading).
    """

    def __init__(self, path: str | Path, label: str | None = None, hash: bool = True) -> None:
        self.path = Path(path)
        self.label = label
        self.hash = hash
        self.sha256 = ""

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        h = hashlib.sha256() if self.hash else None
        bar = Progress(self.path, self.label)
        first = 1
        pending: list[bytes] = []  # the start of a line that continues in the next block
        try:
            with open(self.path, "rb", buffering=0) as fh:
                while block := fh.read(BLOCK):
                    if h is not None:
                        h.update(block)
                    bar.update(len(block))
                    cut = block.rfind(b"\n")
                    if cut < 0:
                        pending.append(block)
                        continue
                    head = b"".join([*pending, block[:cut]]) if pending else block[:cut]
                    pending = [block[cut + 1:]] if cut + 1 < len(block) else []
                    first = yield from _split(head, first)
            if pending:
                yield from _split(b"".join(pending), first)
        finally:
            bar.close()
        if h is not None:
            self.sha256 = PREFIX + h.hexdigest()


def _split(data: bytes, first: int) -> Generator[tuple[int, str | None], None, int]:
    """Yield the numbered lines of ``data`` from line ``first``; return the next line number."""
    try:
        lines: list[str | None] = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = [_decode_or_none(raw) for raw in data.split(b"\n")]
    for offset, line in enumerate(lines):
        yield first + offset, line
    return first + len(lines)


def _decode_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
