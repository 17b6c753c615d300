"""Cost of `verifily compare` on a handful of evaluated runs vs merely importing torch.

Builds RUNS evaluated SFT runs (ROWS test rows each, sliced by source) with the real evaluation
code, then times in one session, interleaved: `verifily compare --slice-by source` over all of
them (paired bootstrap of every delta, overall and per slice) and `python -c "import torch"`
(the least a comparison that loaded a model stack would pay), and `compare --no-verify` (the
same without checking each run's hashes and eval seal). Prints the medians and their ratios,
plus the in-process time of ``compare()``.

    .venv/bin/python benchmarks/bench_compare.py [--runs 5] [--rows 500] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = ("human", "synthetic", "ai_contaminated")
ENTRY = "from verifily_core.cli import main; main()"


def _make_run(root: Path, run_id: str, rows: int, skill: float, regs) -> Path:
    from verifily_core.evaluation import build_eval_result, write_eval_files
    from verifily_core.testing import seal_run

    rng = random.Random(run_id)
    run = root / run_id
    run.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "name": None, "status": "completed", "task": "sft",
            "base_model": "m", "dataset": {"ref": None}, "started_at": "2026-01-01T00:00:00Z", "completed_at": None,
            "duration_seconds": 1.0, "metrics": {}, "artifact_path": str(run), "error": None,
            "hashes": {"config_hash": "", "data_hash": "", "env_hash": "", "reproducibility_hash": ""}}
    (run / "run_meta.json").write_text(json.dumps(meta))
    (run / "config.yaml").write_text("task: sft\nbase_model: m\n")
    seal_run(run)  # compare refuses runs whose files do not match their hashes
    records = []
    for i in range(rows):
        ref = [f"w{i}x{j}" for j in range(4)]
        k = sum(rng.random() < skill for _ in range(4))
        records.append({"index": i, "row_id": f"sha256:{i}", "reference": " ".join(ref),
                        "prediction": " ".join(ref[:k] + ["other"] * (4 - k)),
                        "tags": {"source": SOURCES[i % 3]}, "scores": {"loss": rng.uniform(0.5, 2.0)}})
    metrics = [regs.metrics.get(m) for m in ("token_f1", "exact_match", "loss")]
    result = build_eval_result(records, "sft", metrics, slicers=regs.slicers, slice_by=["source"], run_id=run_id,
                               test_data={"path": "test.jsonl", "sha256": "sha256:test", "num_examples": rows})
    write_eval_files(result, run / "eval", records, run_path=run)
    return run


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from verifily_core.comparison.compare_runs import compare
    from verifily_core.plugins import load_registries

    regs = load_registries()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_make_run(Path(tmp), f"run_{i}", args.rows, 0.5 + 0.05 * i, regs) for i in range(args.runs)]
        joined = ",".join(map(str, runs))
        commands = {
            "verifily compare": [sys.executable, "-c", ENTRY, "compare", "--runs", joined, "--slice-by", "source"],
            "compare --no-verify": [sys.executable, "-c", ENTRY, "compare", "--runs", joined, "--slice-by", "source",
                                    "--no-verify"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        for cmd in commands.values():  # warm-up (file-system caches, .pyc files)
            _time(cmd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(_time(cmd))
        inproc = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            compare([str(r) for r in runs], slice_by="source", registries=regs)
            inproc.append(time.perf_counter() - start)
    ours, unverified, torch_import = (statistics.median(times[n]) for n in commands)
    print(f"{args.runs} runs x {args.rows} test rows, sliced by source (paired bootstrap, 1000 resamples)")
    print(f"{'command':<28} {'median s':>9}")
    for name, values in times.items():
        print(f"{name:<28} {statistics.median(values):>9.3f}")
    print(f"{'compare() in process':<28} {statistics.median(inproc):>9.3f}")
    print(f"ratio verifily compare / import torch: {ours / torch_import:.2f}x")
    print(f"ratio verifying the runs' hashes / --no-verify: {ours / unverified:.2f}x")


if __name__ == "__main__":
    main()
