"""``verify_run``: recompute a sealed run's config, data, environment and artifact hashes from
the files on disk and compare them with ``hashes.json`` (see ``docs/run-directory.md``).

* Config: ``config.yaml`` -> ``TrainConfig`` -> ``to_hash()``.
* Data: every file of ``hashes.json`` ``data_files`` re-hashed (at its recorded path, or in the
  dataset store under the run's dataset ref when the path is gone), then their content hash.
* Environment: the current versions (read from package metadata, no import) vs
  ``environment.json``; differences are named (``torch 2.2.0 vs 2.3.1``).
* Artifacts: sha256 of every file of the run vs ``artifacts`` (changed, missing, added files
  named), and the hash record's own consistency (``hashes.json`` vs ``run_meta.json``).
* Base model: a local model folder re-hashed file by file; a Hub model's recorded commit is
  shown (NOT CHECKED: the Hub serves a commit unchanged).
* Eval files: every file of ``eval/`` vs its seal ``eval/eval_hashes.json``, which must have
  been made for this run's ``hashes.json``.

:func:`require_intact` is the cheaper gate that ``eval`` and ``compare`` pass a run through
before they trust it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifily_core.errors import ReproduceError, VerifilyTrainError
from verifily_core.files import read_json
from verifily_core.hashing import hash_differences, hash_tree, reproducibility_hash, sha256_file, special_entries
from verifily_core.reproduction.result import (
    ARTIFACTS, BASE, CONFIG, DATA, ENV, EVAL, MATCH, MISMATCH, PARTIAL, UNCHECKED, Check, ReproduceResult,
)
from verifily_core.runs import STATUS_COMPLETED, Run, load_run

MAX_NAMED = 5  # files named in one reason; the rest are counted
HASH_KEYS = ("config_hash", "data_hash", "env_hash", "reproducibility_hash")


def verify_run(run_path: str | Path, runs_dir: str | Path = "runs") -> ReproduceResult:
    """Check every hash of a completed run; verdict MATCH, PARTIAL MATCH (environment only) or MISMATCH.

    :raises ReproduceError: the run is not completed or has no readable ``hashes.json``.
    """
    run = load_run(run_path, search_dirs=(runs_dir,))
    if run.status != STATUS_COMPLETED:
        raise ReproduceError(f"{run.path}: run status is '{run.status}'; only completed (sealed) runs can be verified")
    hashes = _read_json(run.path / "hashes.json", "the run is not sealed")
    checks = [check_config(run.path, hashes), check_data(run, hashes), check_env(run.path, hashes),
              check_artifacts(run, hashes), check_eval_files(run), check_base(hashes)]
    failed = {c.name for c in checks if not c.ok}
    verdict = MATCH if not failed else PARTIAL if failed == {ENV} else MISMATCH
    return ReproduceResult(run_id=run.run_id, verdict=verdict, checks=checks)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise ReproduceError(f"{path}: missing or unreadable ({type(exc).__name__}); {what}") from None
    if not isinstance(doc, dict):
        raise ReproduceError(f"{path}: not a JSON object; {what}")
    return doc


def check_config(path: Path, hashes: dict[str, Any]) -> Check:
    """``config.yaml`` re-validated and re-hashed."""
    from verifily_core.config import TrainConfig

    recorded = hashes.get("config_hash", "")
    try:
        actual = TrainConfig.from_yaml(path / "config.yaml").to_hash()
    except (VerifilyTrainError, OSError) as exc:
        return Check(CONFIG, recorded, MISMATCH, f"config.yaml is no longer a valid config: {exc}")
    if actual == recorded:
        return Check(CONFIG, recorded, MATCH, actual=actual)
    return Check(CONFIG, recorded, MISMATCH, f"config.yaml changed: it now hashes to {actual}", actual)


def check_data(run: Run, hashes: dict[str, Any]) -> Check:
    """Every training/validation/test file re-hashed, then the dataset content hash."""
    from verifily_core.datasets.manifest import DataFile, content_hash

    recorded = hashes.get("data_hash", "")
    entries = hashes.get("data_files") or {}
    if not entries:
        return Check(DATA, recorded, MISMATCH, "hashes.json lists no data files to re-hash")
    problems, files = [], []
    for split, entry in sorted(entries.items()):
        path = _locate(run, split, entry["path"])
        if path is None:
            problems.append(f"{split} file {entry['path']} is missing")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{split} file {path} changed ({_short(entry['sha256'])} -> {_short(actual)})")
        files.append(DataFile(split=split, path=str(path), num_rows=0, sha256=actual))
    if problems:
        return Check(DATA, recorded, MISMATCH, "; ".join(problems))
    actual = content_hash(files)
    if actual != recorded:
        return Check(DATA, recorded, MISMATCH, f"the data files match hashes.json but their content hash is {actual}", actual)
    return Check(DATA, recorded, MATCH, actual=actual)


def _locate(run: Run, split: str, recorded_path: str) -> Path | None:
    """The recorded file, else the same split of the run's dataset version in the store."""
    path = Path(recorded_path)
    if path.is_file():
        return path
    ref = run.dataset.get("ref")
    if not ref:
        return None
    try:
        from verifily_core.config import TrainConfig
        from verifily_core.datasets import DatasetStore, store_path

        store = store_path(None, TrainConfig.from_yaml(run.path / "config.yaml").dataset_store)
        found = DatasetStore(store).get(ref).split_path(split)
    except VerifilyTrainError:
        return None
    return found if found is not None and found.is_file() else None


def check_env(path: Path, hashes: dict[str, Any]) -> Check:
    """The current environment (device type and distributions as recorded) vs ``environment.json``."""
    from verifily_core.environment import collect_environment, diff_environments, env_hash

    recorded = hashes.get("env_hash", "")
    try:
        saved = _read_json(path / "environment.json", "the run's environment record is damaged")
    except ReproduceError as exc:
        return Check(ENV, recorded, MISMATCH, str(exc))
    hashed = saved.get("hashed", {})
    current = collect_environment(hashed.get("device_type", "cpu"), packages=hashed.get("packages") or {})
    actual = env_hash(current)
    if actual == recorded and env_hash(saved) == recorded:
        return Check(ENV, recorded, MATCH, actual=actual)
    reasons = diff_environments(saved, current) or ["environment.json does not match the recorded env_hash"]
    return Check(ENV, recorded, MISMATCH, "; ".join(reasons), actual)


def check_artifacts(run: Run, hashes: dict[str, Any]) -> Check:
    """sha256 of every run file vs ``artifacts``; ``hashes.json`` consistent with ``run_meta.json``."""
    recorded = hashes.get("artifacts") or {}
    actual = hash_tree(run.path)
    problems = hash_differences(recorded, actual)
    problems += [f"{k} is a link or special file (a run holds regular files only)" for k in special_entries(run.path)]
    meta = {"config_hash": run.config_hash, "data_hash": run.data_hash, "env_hash": run.env_hash,
            "reproducibility_hash": run.reproducibility_hash}
    problems += [f"hashes.json {k} differs from run_meta.json" for k in HASH_KEYS if hashes.get(k) != meta[k]]
    expected = reproducibility_hash(hashes.get("config_hash", ""), hashes.get("data_hash", ""), hashes.get("env_hash", ""))
    if hashes.get("reproducibility_hash") != expected:
        problems.append("hashes.json reproducibility_hash is not sha256(config_hash + data_hash + env_hash)")
    summary = f"{len(recorded)} files"
    if not problems:
        return Check(ARTIFACTS, summary, MATCH)
    more = f" (+{len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
    return Check(ARTIFACTS, summary, MISMATCH, "; ".join(problems[:MAX_NAMED]) + more)


def check_eval_files(run: Run) -> Check:
    """Every file of ``eval/`` vs ``eval/eval_hashes.json`` (see :mod:`verifily_core.evaluation.seal`)."""
    from verifily_core.evaluation.seal import check_eval

    count, problems = check_eval(run.path / "eval", run.path)
    summary = f"{count} files" if count else "not evaluated"
    if not problems:
        return Check(EVAL, summary, MATCH)
    more = f" (+{len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
    return Check(EVAL, summary, MISMATCH, "; ".join(problems[:MAX_NAMED]) + more)


def check_base(hashes: dict[str, Any]) -> Check:
    """The base model's files vs ``hashes.json`` ``base_model`` (see :mod:`verifily_core.base_model`)."""
    from verifily_core.base_model import check_base_model

    record = hashes.get("base_model")
    recorded = (record.get("hash") or record.get("revision") or "") if isinstance(record, dict) else ""
    matches, why = check_base_model(record)
    status = UNCHECKED if matches is None else MATCH if matches else MISMATCH
    return Check(BASE, recorded or "-", status, "" if matches else why, why if matches else None)


def run_problems(run: Run, files: tuple[str, ...] | None = None, eval_files: bool = True) -> list[str]:
    """What keeps a completed run from verifying, without re-hashing data or environment.

    :param files: the run files to re-hash against ``hashes.json`` (default: every artifact;
        links and added files are then problems too).
    :param eval_files: also check ``eval/`` against its seal.
    """
    try:
        hashes = _read_json(run.path / "hashes.json", "the run is not sealed")
    except ReproduceError as exc:
        return [str(exc)]
    if files is None:
        check = check_artifacts(run, hashes)
        problems = [] if check.ok else [check.reason]
    else:
        recorded = hashes.get("artifacts") or {}
        problems = [_file_problem(run.path, f, recorded.get(f)) for f in files]
        problems = [p for p in problems if p]
        meta = {"config_hash": run.config_hash, "data_hash": run.data_hash, "env_hash": run.env_hash,
                "reproducibility_hash": run.reproducibility_hash}
        problems += [f"hashes.json {k} differs from run_meta.json" for k in HASH_KEYS if hashes.get(k) != meta[k]]
    if eval_files:
        from verifily_core.evaluation.seal import check_eval

        problems += check_eval(run.path / "eval", run.path)[1]
    return problems


def _file_problem(root: Path, rel: str, recorded: str | None) -> str | None:
    path = root / rel
    if recorded is None:
        return f"{rel} is not in hashes.json"
    if path.is_symlink() or not path.is_file():
        return f"{rel} missing" if not path.exists() and not path.is_symlink() else f"{rel} is a link or special file"
    return f"{rel} changed" if sha256_file(path) != recorded else None


def require_intact(run: Run, what: str, flag: str = "--no-verify", files: tuple[str, ...] | None = None,
                   eval_files: bool = True, error: type[VerifilyTrainError] = ReproduceError) -> None:
    """Raise ``error`` naming the run and its first problems when :func:`run_problems` finds any.

    :param what: what the caller was about to do ("evaluate it", "compare it").
    :param flag: the option that skips this check, named in the message.
    """
    problems = run_problems(run, files, eval_files)
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        raise error(f"{run.path}: the run does not verify ({'; '.join(problems[:2])}{more}); refusing to {what}. "
                    f"See `verifily reproduce --run {run.path} --verify-only`, or pass {flag} to skip the check")


def _short(digest: str) -> str:
    return digest[:19] + "..." if len(digest) > 19 else digest
