"""Hand-made run directories for tests and benchmarks of the readers (``compare``, ``runs``).

A reader refuses a run whose files do not match its ``hashes.json``; :func:`seal_run` seals a
hand-made directory the way a trained run is sealed, so it reads as intact.
"""

from __future__ import annotations

from pathlib import Path

from verifily_core.files import read_json, write_json, write_text
from verifily_core.hashing import hash_tree

HASH_KEYS = ("config_hash", "data_hash", "env_hash", "reproducibility_hash")


def seal_run(run_dir: str | Path) -> Path:
    """Write ``hashes.json`` for ``run_dir``: its hash fields copied from ``run_meta.json`` and the
    sha256 of every file outside ``eval/``; returns its path. Seal ``eval/`` afterwards by
    writing it with ``write_eval_files(..., run_path=run_dir)``."""
    run_dir = Path(run_dir)
    recorded = read_json(run_dir / "run_meta.json").get("hashes") or {}
    doc = {"format_version": 1, **{k: recorded.get(k, "") for k in HASH_KEYS}, "data_files": {},
           "artifacts": hash_tree(run_dir)}
    return write_json(run_dir / "hashes.json", doc)


def train_run(config: dict, folder: str | Path, name: str = "c") -> Path:
    """Write ``config`` to ``folder/<name>.yaml``, train it with ``verifily train`` (in this
    process) and return the run directory; fails with the command's output when training does."""
    import yaml
    from click.testing import CliRunner

    from verifily_core.cli import cli

    path = Path(folder) / f"{name}.yaml"
    write_text(path, yaml.safe_dump(config))
    runs = Path(config.get("output", {}).get("dir", "runs"))
    before = set(runs.iterdir()) if runs.is_dir() else set()
    res = CliRunner().invoke(cli, ["train", "--config", str(path)])
    if res.exit_code != 0:
        raise AssertionError(f"verifily train --config {path} exited {res.exit_code}: {res.output}")
    (made,) = [p for p in set(runs.iterdir()) - before if not p.name.startswith(".")]
    return made
