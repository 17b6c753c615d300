"""The one atomic writer and JSONL reader (verifily_core.files), and that the project uses them."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest

from verifily_core import files

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "verifily_core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


def test_write_json_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "doc.json"
    files.write_json(path, {"a": 1})
    files.write_json(path, {"b": [1, 2]})
    assert files.read_json(path) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "log.jsonl"
    files.write_jsonl(path, [{"step": 1}])

    def rows():
        yield {"step": 2}
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as exc:
        files.write_jsonl(path, rows())
    assert exc.value.errno == errno.ENOSPC
    assert [row for _, row in files.read_jsonl(path)] == [{"step": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_write_into_a_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.write_text(tmp_path / "nope" / "a.txt", "x")


def test_read_jsonl_names_file_and_line_with_the_callers_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n[1]\n')
    seen = []
    with pytest.raises(RuntimeError, match=r"p\.jsonl:4: expected a JSON object, got list"):
        for lineno, row in files.read_jsonl(path, error=RuntimeError):
            seen.append((lineno, row))
    assert seen == [(1, {"a": 1}), (3, {"a": 2})]


def test_read_jsonl_skips_a_torn_last_line_only_when_asked(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st', encoding="utf-8")
    assert [row["step"] for _, row in files.read_jsonl(path, skip_torn_tail=True)] == [1, 2]
    with pytest.raises(ValueError, match=r"train_log\.jsonl:3: invalid JSON"):
        list(files.read_jsonl(path))


def test_read_jsonl_reports_invalid_utf8(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not valid UTF-8"):
        list(files.read_jsonl(path))


def _writes_outside_the_writer(source: Path) -> list[str]:
    """Calls that write a file in place: ``.write_text``, ``.write_bytes``, ``open(..., "w"/"a")``."""
    found, label = [], source.relative_to(ROOT) if ROOT in source.parents else source.name
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("write_text", "write_bytes") and isinstance(func, ast.Attribute) \
                and not (isinstance(func.value, ast.Name) and func.value.id == "files"):
            found.append(f"{label}:{node.lineno}: .{name}()")
        if name in ("open", "fdopen"):
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
            if any(isinstance(m, str) and set(m) & set("wax") for m in modes):
                found.append(f"{label}:{node.lineno}: open(..., {modes[0]!r})")
    return found


def test_every_file_the_project_writes_goes_through_the_atomic_writer():
    found = [hit for src in SOURCES if src.name != "files.py" or src.parent.name != "verifily_core"
             for hit in _writes_outside_the_writer(src)]
    assert found == []


def test_the_scan_finds_a_planted_in_place_write(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('from pathlib import Path\nPath("x").write_text("y")\nopen("z", "w")\n')
    hits = _writes_outside_the_writer(planted)
    assert [h.split(": ", 1)[1] for h in hits] == [".write_text()", "open(..., 'w')"]
