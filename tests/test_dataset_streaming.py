"""Streaming reads: block-wise hashing and line splitting agree with a whole-file read."""

from __future__ import annotations

import hashlib
import json

import pytest

from verifily_core.datasets import hash_file
from verifily_core.datasets import streaming
from verifily_core.datasets.rows import iter_jsonl, scan_file
from verifily_core.datasets.streaming import HashedLines
from verifily_core.errors import DataError


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 bytes, so lines straddle blocks and some blocks hold no newline at all."""
    monkeypatch.setattr(streaming, "BLOCK", 7)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("data", [
    b'{"a": 1}\n{"b": "a much longer line than one block"}\n\n{"c": 3}\n',
    b'{"a": 1}\r\n{"b": 2}',  # CRLF, no final newline
    b"",
    b"\n\n",
    "{\"t\": \"caf\u00e9 \u2603 \U0001F600\"}\n".encode(),  # multi-byte characters cut by blocks
])
def test_lines_and_hash_match_a_whole_file_read(tmp_path, small_blocks, data):
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    lines = HashedLines(path)
    got = list(lines)
    expected = data.decode().split("\n")
    if expected and expected[-1] == "":
        expected.pop()
    assert got == list(enumerate(expected, 1))
    assert lines.sha256 == _sha(data) == hash_file(path)


def test_invalid_utf8_names_its_line_and_the_others_still_parse(tmp_path, small_blocks):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n{"c": 3}\n')
    assert [t for _, t in HashedLines(path)] == ['{"a": 1}', None, '{"c": 3}']
    scan = scan_file(path)
    assert scan.num_rows == 2 and scan.problems == [f"{path}:2: not valid UTF-8"]
    with pytest.raises(DataError, match=":2: not valid UTF-8"):
        list(iter_jsonl(path))


def test_trailing_garbage_and_non_objects_are_errors(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1} x\n[1, 2]\n  {"ok": true}  \n')
    scan = scan_file(path)
    assert scan.num_rows == 1
    assert scan.problems == [f"{path}:1: invalid JSON (extra data at column 10)",
                             f"{path}:2: expected a JSON object, got list"]


def test_memory_does_not_hold_the_file(tmp_path, monkeypatch):
    """Every block is read once and released: the reader never asks for more than one block."""
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(20000):
            fh.write(json.dumps({"instruction": f"row {i}", "output": "x" * 50}) + "\n")
    reads = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n):
            reads.append(n)
            return self.fh.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(streaming, "open", lambda *a, **k: Spy(real_open(*a, **k)), raising=False)
    monkeypatch.setattr(streaming, "BLOCK", 64 << 10)
    scan = scan_file(path)
    assert scan.num_rows == 20000 and scan.sha256 == hash_file(path)
    assert len(reads) > 10 and set(reads) == {64 << 10}


def test_large_files_get_a_progress_bar_on_stderr(tmp_path, monkeypatch, capsys):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n' * 100)
    monkeypatch.setenv("VERIFILY_PROGRESS", "1")  # as on a terminal
    monkeypatch.setattr(streaming, "PROGRESS_BYTES", 10)
    hash_file(path, label="Hashing f")
    assert "Hashing f" in capsys.readouterr().err
    monkeypatch.setattr(streaming, "PROGRESS_BYTES", 1 << 30)
    hash_file(path, label="Hashing f")
    assert "Hashing f" not in capsys.readouterr().err


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n' * 100)
    monkeypatch.delenv("VERIFILY_PROGRESS", raising=False)
    monkeypatch.setattr(streaming, "PROGRESS_BYTES", 10)
    hash_file(path, label="Hashing f")
    assert capsys.readouterr().err == ""
