"""training.optimizations: peak memory with and without gradient checkpointing, and train time per optimizer.

Memory: `verifily train --dry-run --check-batch` (each in a fresh process) on a tiny Llama with
long rows (--seq-len tokens, eager attention), with gradient checkpointing off and on; prints
each peak and their ratio (checkpointed / plain). Time: `verifily train` for --steps steps with
each optimizer_type (each in a fresh process, alternating for --repeats rounds); prints the best
train_runtime_s of each and its ratio to adamw_torch. Everything is measured in this one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_optimizations.py [--seq-len 512 --steps 60 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
WORDS = "river stone cloud field light water tree hill road wind".split()


def _verifily(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", "from verifily_core.cli import main; main()", *args],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"verifily {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _rows(n: int, words: int) -> list[dict[str, str]]:
    return [{"instruction": "Repeat the words.", "input": " ".join(WORDS[(i + j) % 10] for j in range(words)),
             "output": " ".join(WORDS[(i + j) % 10] for j in range(words // 2))} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               TOKENIZERS_PARALLELISM="false", VERIFILY_PROGRESS="0")

    from verifily_core.testing import make_sft_rows, write_jsonl
    from verifily_core.testing.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="verifily-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model("llama", root / "model")
        long_rows = write_jsonl(root / "long.jsonl", _rows(2 * args.batch_size, args.seq_len))
        short_rows = write_jsonl(root / "short.jsonl", make_sft_rows(256, seed=1))

        def config(name: str, train: Path, **training: object) -> Path:
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump({
                "task": "sft", "base_model": str(model), "data_paths": {"train": str(train)},
                "compute": {"device": "cpu"}, "data_checks": {"leakage": "off"}, "eval": {"enabled": False},
                "output": {"dir": str(root / "runs")}, "training": training}))
            return path

        memory_cfg = config("memory", long_rows, batch_size=args.batch_size, max_seq_length=args.seq_len,
                            optimizations={"attention_implementation": "eager"})
        peaks = {}
        for checkpointing in (False, True):
            out = _verifily(["train", "--config", str(memory_cfg), "--dry-run", "--check-batch", "--format", "json",
                             f"training.optimizations.gradient_checkpointing={str(checkpointing).lower()}"], env)
            peaks[checkpointing] = json.loads(out)["batch_check"]["peak_memory"]
        print(f"Peak memory of one {args.batch_size} x {args.seq_len}-token batch (forward, backward, optimizer step; "
              "growth of resident memory on CPU):")
        print(f"  without gradient checkpointing  {peaks[False] / 2**20:8.1f} MiB")
        print(f"  with gradient checkpointing     {peaks[True] / 2**20:8.1f} MiB")
        print(f"  ratio (with / without)          {peaks[True] / peaks[False]:8.2f}")

        times: dict[str, float] = {}
        for _ in range(args.repeats):
            for optim in OPTIMIZERS:
                cfg = config(optim, short_rows, batch_size=8, gradient_accumulation_steps=1, max_steps=args.steps,
                             logging_steps=args.steps, save_steps=10 * args.steps, max_seq_length=64,
                             optimizations={"optimizer_type": optim})
                meta = json.loads(_verifily(["train", "--config", str(cfg), "--format", "json"], env))
                seconds = float(meta["metrics"]["train_runtime_s"])
                times[optim] = min(times.get(optim, seconds), seconds)
        print(f"\nTrain time of {args.steps} steps (batch 8, tiny Llama, best of {args.repeats}), ratio to adamw_torch:")
        for optim in OPTIMIZERS:
            print(f"  {optim:<20} {times[optim]:7.2f}s  {times[optim] / times['adamw_torch']:5.2f}x")


if __name__ == "__main__":
    main()
