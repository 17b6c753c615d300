"""Writing ``eval/`` atomically: every file goes to a temporary name first and is renamed into
place; ``eval_results.json`` (which lists the sha256 of the other files) is renamed last, so a
reader never sees results that point at missing or half-written files; then ``eval_hashes.json``
seals the folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from verifily_core.errors import EvalError, describe_os_error
from verifily_core.evaluation.records import public_record
from verifily_core.evaluation.result import HARD_FILE, PLOTS_DIR, PREDICTIONS_FILE, RESULTS_FILE, EvalResult, json_safe
from verifily_core.files import read_json, write_lines, write_text
from verifily_core.evaluation.seal import SEAL_FILE, seal_eval
from verifily_core.hashing import sha256_file

ELSEWHERE = "write the results elsewhere (verifily eval --output DIR)"
"""What to do besides freeing space or permissions when ``eval/`` cannot be written."""


def write_eval_files(result: EvalResult, out_dir: str | Path,
                     records: Sequence[Mapping[str, Any]] | None = None,
                     run_path: str | Path | None = None) -> dict[str, Path]:
    """Write ``eval_results.json``, ``predictions.jsonl``, ``hard_examples.jsonl`` and metric
    artifacts (e.g. ``confusion_matrix.png``) into ``out_dir``; return the paths by file name.

    ``records`` default to the scored records kept on ``result``. Files a previous evaluation
    listed in ``eval_results.json`` and this one did not write are removed, and so is
    ``plots/`` (drawn from the previous numbers by ``verifily eval --plot``).
    Sets ``result.files`` (sha256 by file name) and ``result.output_dir``. Last, the folder is
    sealed (``eval_hashes.json``, linked to the run at ``run_path``: see :mod:`.seal`).
    :raises EvalError: when the directory cannot be written (a full disk); the files this call
        had put in place are removed again, so no unsealed result is left to read.
    """
    out = Path(out_dir)
    rows = result.records if records is None else records
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".eval-", dir=out))
    except OSError as exc:
        raise EvalError(describe_os_error(exc, ELSEWHERE, path=out)) from None
    placed: list[str] = []
    try:
        _write_jsonl(stage / PREDICTIONS_FILE, (public_record(r) for r in rows))
        _write_jsonl(stage / HARD_FILE, result.hard_examples)
        names = [PREDICTIONS_FILE, HARD_FILE]
        for name, details in result.details.items():
            metric = result.metric_objects.get(name)
            if metric is not None:
                names += [n for n in metric.write_artifacts(details, stage) if (stage / n).is_file()]
        previous = _previous_files(out / RESULTS_FILE)
        result.files = {n: sha256_file(stage / n) for n in names}
        result.output_dir = str(out)
        write_text(stage / RESULTS_FILE, _dumps(result.to_json_dict(), indent=2) + "\n")
        for name in [*names, RESULTS_FILE]:
            os.replace(stage / name, out / name)
            placed.append(name)
        for name in previous - set(names) - {RESULTS_FILE}:
            if "/" not in name and not name.startswith("."):
                (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / PLOTS_DIR, ignore_errors=True)  # drawn from the previous numbers
        seal_eval(out, run_path, result.run_id)
    except OSError as exc:
        for name in reversed(placed):  # results first: no unsealed evaluation is left to read
            (out / name).unlink(missing_ok=True)
        raise EvalError(describe_os_error(_named(exc, stage, out), ELSEWHERE, path=out)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {n: out / n for n in [*names, RESULTS_FILE, SEAL_FILE]}


def _named(exc: OSError, stage: Path, out: Path) -> OSError:
    """``exc`` naming the file in ``out`` it was for, not its staging copy (removed on the way out)."""
    for attr in ("filename", "filename2"):
        name = getattr(exc, attr)
        if name and Path(name).parent == stage:
            setattr(exc, attr, str(out / Path(name).name))
    return exc


def _previous_files(path: Path) -> set[str]:
    try:
        return set(read_json(path).get("files") or {})
    except (OSError, ValueError, AttributeError):
        return set()


def _write_jsonl(path: Path, items: Any) -> None:
    write_lines(path, (_dumps(item) + "\n" for item in items))


def _dumps(doc: Any, indent: int | None = None) -> str:
    """Strict JSON (NumPy values converted, non-finite floats written as ``null``)."""
    return json.dumps(json_safe(doc), indent=indent, ensure_ascii=False, allow_nan=False)
