"""Peak memory of training on a dataset 10x larger: streamed (`training.streaming: true`) vs in memory.

The same SFT run (a tiny Llama built offline, LoRA, `training.max_steps` steps, rows truncated
to `max_seq_length`, so the compute is the same at any size) trains on a train split of N rows and
of 10 x N rows, each run in a fresh `verifily train` process whose peak resident memory
(`ru_maxrss`) it reports itself at the end. Each row carries a long input (`--row-bytes` of
text), so the split's size, not the model, sets the in-memory peak.

Prints the peak of each run and the ratio 10x / 1x for each path. Target: the streamed run's
ratio within 1.2 (memory does not grow with the split); the in-memory path is the baseline,
whose peak grows with it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py [--rows 2000 --row-bytes 4000 --steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHILD = r"""
import json, resource, sys
from verifily_core.api import train
train(sys.argv[1])
print("MAXRSS " + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""
WORDS = ("the", "river", "stone", "cloud", "music", "window", "garden", "letter")


def write_split(path: Path, rows: int, row_bytes: int, seed: int) -> Path:
    """``rows`` SFT rows of about ``row_bytes`` each, written line by line (never held whole)."""
    from verifily_core.testing import make_sft_rows

    rng = random.Random(seed)
    base = [{k: v for k, v in r.items() if k != "tags"} for r in make_sft_rows(64, seed=seed)]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            row = dict(base[i % len(base)])
            filler = []
            size = 0
            while size < row_bytes:
                word = rng.choice(WORDS)
                filler.append(word)
                size += len(word) + 1
            row["input"] = f"{row['input']} {' '.join(filler)} #{i}"
            fh.write(json.dumps(row) + "\n")
    return path


def peak_rss(model: Path, data: Path, out: Path, streaming: bool, steps: int) -> int:
    """Peak resident memory (bytes) of one `verifily train` process on ``data``."""
    import yaml

    training = {"num_epochs": 1, "max_steps": steps, "batch_size": 4, "gradient_accumulation_steps": 1,
                "learning_rate": 0.001, "logging_steps": steps, "save_steps": 10_000, "eval_steps": 10_000,
                "max_seq_length": 64, "warmup_ratio": 0.0}
    if streaming:
        training.update(streaming=True, shuffle_buffer=1000)
    config = {"task": "sft", "base_model": str(model), "data_paths": {"train": str(data)}, "training": training,
              "lora": {"r": 8, "alpha": 16}, "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
              "output": {"dir": str(out / "runs")}}
    path = out / f"train-{data.stem}-{'stream' if streaming else 'memory'}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"training failed ({path}):\n{proc.stderr[-2000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("MAXRSS ")][-1]
    return int(line.split()[1]) * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the 1x split (the 10x split has 10 times as many)")
    parser.add_argument("--row-bytes", type=int, default=4000, help="bytes of text in each row")
    parser.add_argument("--steps", type=int, default=5, help="training steps of every run")
    args = parser.parse_args()

    from verifily_core.testing.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_model("llama", tmp_path / "model")
        small = write_split(tmp_path / "small.jsonl", args.rows, args.row_bytes, seed=1)
        large = write_split(tmp_path / "large.jsonl", 10 * args.rows, args.row_bytes, seed=1)
        mib = 1 << 20
        print(f"train splits: {args.rows} rows ({small.stat().st_size / mib:.1f} MiB) and {10 * args.rows} rows "
              f"({large.stat().st_size / mib:.1f} MiB); {args.steps} steps of 4 rows each")
        print(f"{'path':<12}{'1x peak':>12}{'10x peak':>12}{'10x / 1x':>10}")
        ratios = {}
        for name, streaming in (("streamed", True), ("in memory", False)):
            one = peak_rss(model, small, tmp_path, streaming, args.steps)
            ten = peak_rss(model, large, tmp_path, streaming, args.steps)
            ratios[name] = ten / one
            print(f"{name:<12}{one / mib:>10.0f}Mi{ten / mib:>10.0f}Mi{ten / one:>10.2f}")
        verdict = "met" if ratios["streamed"] <= 1.2 else "NOT met"
        print(f"target (streamed 10x / 1x <= 1.2): {verdict}; in memory the peak grew {ratios['in memory']:.2f}x")


if __name__ == "__main__":
    main()
