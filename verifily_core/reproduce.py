"""``reproduce()``: prove a run is intact (``verify_only``) or re-create it and compare metrics.

Verdicts and exit codes: ``MATCH`` 0; ``PARTIAL MATCH`` (only the environment differs) 6;
``MISMATCH`` 5; full reproduction: ``REPRODUCIBLE`` 0, ``NOT REPRODUCIBLE`` 5.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import attrs

from verifily_core.config import TrainConfig
from verifily_core.environment import collect_environment, diff_environments, env_hash
from verifily_core.errors import ConfigError, DataError
from verifily_core.hashing import hash_tree, sha256_file
from verifily_core.runs import load_run

MATCH, PARTIAL, MISMATCH = "MATCH", "PARTIAL MATCH", "MISMATCH"
REPRODUCIBLE, NOT_REPRODUCIBLE = "REPRODUCIBLE", "NOT REPRODUCIBLE"
EXIT_CODES = {MATCH: 0, PARTIAL: 6, MISMATCH: 5, REPRODUCIBLE: 0, NOT_REPRODUCIBLE: 5}


@attrs.define
class Check:
    """One verified hash: what, recorded value, MATCH/MISMATCH and why."""

    name: str
    recorded: str
    status: str
    reason: str = ""


@attrs.define
class ReproduceResult:
    """Hash checks (verify-only) and/or the metric comparison of a reproduction."""

    run_id: str
    verdict: str
    checks: list[Check] = attrs.field(factory=list)
    metrics: list[dict[str, Any]] = attrs.field(factory=list)
    tolerance: float | None = None
    mode: str = "verify"
    reproduced_run: str | None = None

    @property
    def exit_code(self) -> int:
        """0 only for MATCH / REPRODUCIBLE."""
        return EXIT_CODES[self.verdict]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data (``reproduce.json``)."""
        return attrs.asdict(self)


def verify_run(run_path: str | Path) -> ReproduceResult:
    """Recompute config, data and environment hashes and every artifact's sha256."""
    run = load_run(run_path)
    path = run.path
    try:
        hashes = json.loads((path / "hashes.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / 'hashes.json'}: missing or unreadable ({exc}); the run is not sealed") from None
    checks = [_check_config(path, hashes), _check_data(hashes), _check_env(path, hashes), _check_artifacts(path, hashes)]
    failed = {c.name for c in checks if c.status != MATCH}
    verdict = MATCH if not failed else PARTIAL if failed == {"Env hash"} else MISMATCH
    return ReproduceResult(run_id=run.run_id, verdict=verdict, checks=checks)


def _check_config(path: Path, hashes: dict[str, Any]) -> Check:
    recorded = hashes.get("config_hash", "")
    try:
        actual = TrainConfig.from_yaml(path / "config.yaml").to_hash()
    except (ConfigError, OSError) as exc:
        return Check("Config hash", recorded, MISMATCH, f"config.yaml unreadable: {exc}")
    return Check("Config hash", recorded, MATCH) if actual == recorded else Check(
        "Config hash", recorded, MISMATCH, f"config.yaml now hashes to {actual}")


def _check_data(hashes: dict[str, Any]) -> Check:
    recorded = hashes.get("data_hash", "")
    for split, entry in sorted(hashes.get("data_files", {}).items()):
        file = Path(entry["path"])
        if not file.is_file():
            return Check("Data hash", recorded, MISMATCH, f"{split} file {file} is missing")
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            return Check("Data hash", recorded, MISMATCH, f"{split} file {file} changed ({entry['sha256']} vs {actual})")
    return Check("Data hash", recorded, MATCH)


def _check_env(path: Path, hashes: dict[str, Any]) -> Check:
    recorded = hashes.get("env_hash", "")
    saved = json.loads((path / "environment.json").read_text(encoding="utf-8"))
    current = collect_environment(saved.get("hashed", {}).get("device_type", "cpu"))
    if env_hash(current) == recorded and env_hash(saved) == recorded:
        return Check("Env hash", recorded, MATCH)
    reasons = diff_environments(saved, current) or ["environment.json does not match its recorded hash"]
    return Check("Env hash", recorded, MISMATCH, "; ".join(reasons))


def _check_artifacts(path: Path, hashes: dict[str, Any]) -> Check:
    recorded = hashes.get("artifacts", {})
    actual = hash_tree(path)
    changed = sorted(k for k in recorded if k in actual and actual[k] != recorded[k])
    missing = sorted(k for k in recorded if k not in actual)
    extra = sorted(k for k in actual if k not in recorded)
    problems = [f"{k} changed" for k in changed] + [f"{k} missing" for k in missing] + [f"{k} added" for k in extra]
    summary = f"{len(recorded)} files"
    if problems:
        return Check("Artifacts", summary, MISMATCH, "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return Check("Artifacts", summary, MATCH)


def reproduce_run(run_path: str | Path, mode: str = "train", output_dir: str | Path | None = None,
                  tolerance: float = 0.005, device: str = "auto", registries: Any = None) -> ReproduceResult:
    """Re-create a run (``train``: retrain from its config and verified data; ``eval``: re-evaluate
    its adapter) and compare every metric within ``tolerance``; writes ``reproduce.json``."""
    from verifily_core.api import train
    from verifily_core.evaluator import evaluate

    original = load_run(run_path)
    orig_eval = _eval_values(original.path / "eval" / "eval_results.json")
    if mode == "eval":
        out = Path(output_dir or tempfile.mkdtemp(prefix=f"reproduce_{original.run_id}_"))
        evaluate(original.path, output=out, device=device, registries=registries)
        new_values, new_run = _eval_values(out / "eval_results.json"), None
        report_dir = out
    elif mode == "train":
        cfg = TrainConfig.from_yaml(original.path / "config.yaml")
        flags = {"output.dir": str(output_dir or Path(cfg.output.dir)), "output.name": f"reproduce-{original.run_id}"}
        data = cfg.to_dict()
        data["output"].update({"dir": flags["output.dir"], "name": flags["output.name"]})
        data["compute"]["device"] = device if device != "auto" else data["compute"]["device"]
        new = train(data, registries=registries)
        if cfg.eval.enabled and not (new.path / "eval" / "eval_results.json").is_file() and orig_eval:
            evaluate(new.path, registries=registries)
        new_values = {**new.metrics, **_eval_values(new.path / "eval" / "eval_results.json")}
        orig_eval = {**original.metrics, **orig_eval}
        new_run, report_dir = new.run_id, new.path / "eval"
    else:
        raise ConfigError(f"--mode {mode}: expected train or eval")
    rows = []
    for name in sorted(orig_eval):
        a, b = orig_eval[name], new_values.get(name)
        if not isinstance(a, (int, float)) or isinstance(a, bool) or name.endswith(("_runtime_s", "runtime")):
            continue
        delta = None if b is None else b - a
        ok = delta is not None and math.isfinite(delta) and abs(delta) <= tolerance
        rows.append({"metric": name, "original": a, "reproduced": b, "delta": delta, "within_tolerance": ok})
    verdict = REPRODUCIBLE if rows and all(r["within_tolerance"] for r in rows) else NOT_REPRODUCIBLE
    result = ReproduceResult(run_id=original.run_id, verdict=verdict, metrics=rows, tolerance=tolerance, mode=mode,
                             reproduced_run=new_run)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "reproduce.json").write_text(json.dumps(result.to_json_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def _eval_values(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {f"test_{k}": v["value"] for k, v in doc.get("overall", {}).get("metrics", {}).items()
            if isinstance(v, dict) and isinstance(v.get("value"), (int, float))}
