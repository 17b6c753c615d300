"""Training throughput of 2 data-parallel processes against 1, on this machine's CPU (gloo).

Trains the same tiny Llama (built offline) on the same SFT rows with the same global batch:
`verifily train --batch-size 2B` in one process, `verifily train --nproc 2 --batch-size B` in two,
alternating for --repeats rounds, each process with one torch thread. Prints each setting's best
tokens/s (the run's trained tokens / the Trainer's train_runtime), their ratio (2 over 1), and the
whole command's wall time (process start, imports, the launcher and the rendezvous included).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py [--rows 256 --repeats 2]

Two processes can only go faster where there are two idle cores; on a shared 2-core machine the
ratio measures the communication and the launcher as much as the parallelism.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _train(folder: Path, config: Path, extra: list[str]) -> tuple[float, float]:
    """One `verifily train`; returns (tokens/s of its training loop, wall seconds of the command)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VERIFILY_PROGRESS": "0"}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "from verifily_core.cli import main; main()", "-q", "train",
                          "--config", str(config), *extra], env=env, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode:
        sys.exit(res.stderr[-3000:])
    runs = sorted((folder / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    run = runs[-1]
    meta = json.loads((run / "run_meta.json").read_text())
    tokens = max(json.loads(line).get("tokens_seen", 0) for line in (run / "train_log.jsonl").read_text().splitlines())
    return tokens / meta["metrics"]["train_runtime_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="per-device batch of the 2-process run (B)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from verifily_core.testing import make_sft_rows, write_jsonl
    from verifily_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_tiny_model("llama", folder / "model")
        write_jsonl(folder / "train.jsonl", make_sft_rows(args.rows, seed=1))
        config = folder / "train.yaml"
        config.write_text(yaml.safe_dump({
            "task": "sft", "base_model": str(model), "data_paths": {"train": str(folder / "train.jsonl")},
            "training": {"num_epochs": 1, "gradient_accumulation_steps": 1, "logging_steps": 4, "save_steps": 10_000,
                         "max_seq_length": 128, "learning_rate": 0.001},
            "lora": {"r": 8, "alpha": 16}, "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
            "output": {"dir": str(folder / "runs")},
        }))
        one, two = [], []
        for _ in range(args.repeats):
            one.append(_train(folder, config, ["--batch-size", str(2 * args.batch)]))
            two.append(_train(folder, config, ["--nproc", "2", "--batch-size", str(args.batch)]))
    best1, best2 = max(t for t, _ in one), max(t for t, _ in two)
    print(f"cores: {os.cpu_count()}; rows {args.rows}, global batch {2 * args.batch}, {args.repeats} round(s)")
    print(f"1 process : {best1:9.1f} tokens/s (best), command {min(w for _, w in one):.1f}s")
    print(f"2 processes: {best2:9.1f} tokens/s (best), command {min(w for _, w in two):.1f}s")
    print(f"ratio 2/1 : {best2 / best1:.2f}x tokens/s")


if __name__ == "__main__":
    main()
