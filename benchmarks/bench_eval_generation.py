"""Batched generation (what `verifily eval` does) vs one row at a time, same model and rows.

Builds a tiny Llama offline, generates greedy outputs for N SFT rows with the SFT task's
`predict()` at batch size 16 and at batch size 1 in the same process, and prints rows/s of
each and the speed-up ratio (target: at least 4x).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval_generation.py [--rows 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifily_core.config_loading import resolve_config
    from verifily_core.plugins import load_registries
    from verifily_core.testing import make_sft_rows
    from verifily_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model("llama", tmp, pretrain_steps=0)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tok = AutoTokenizer.from_pretrained(path)
    rows = make_sft_rows(args.rows, seed=7)
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "data_paths": {"train": "t"},
                               "eval": {"max_new_tokens": args.max_new_tokens}})
    task = load_registries().tasks.get("sft")
    options = task.parse_options({})
    timings = {}
    for label, bs in (("batched", args.batch_size), ("one at a time", 1)):
        start = time.perf_counter()
        task.predict(model, tok, rows, "causal_lm", cfg, options, bs, "cpu")
        timings[label] = time.perf_counter() - start
    for label, secs in timings.items():
        print(f"{label:<14} {secs:8.2f} s  {args.rows / secs:8.1f} rows/s")
    print(f"speed-up (batched vs one at a time): {timings['one at a time'] / timings['batched']:.1f}x")


if __name__ == "__main__":
    main()
