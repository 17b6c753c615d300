"""Classification with a causal LM: a head on the last token vs label tokens (the LM head
answering with each label's tokens), at equal steps, on the same model and rows.

Prints test accuracy after each number of epochs (8 steps an epoch), training wall time and the
label-token/head time ratio. By default the model is the tests' tiny Llama (built offline, 60
steps of pretraining) and the rows the tests' synthetic sentiment rows with a text pair
(128 train, 48 test); give --base-model and --data (a folder with train.jsonl and test.jsonl)
to measure a real model and set.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_label_tokens.py [--epochs 2 5 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "head (lr 0.005)": ({}, 0.005),
    "label tokens, one-token words (lr 0.02)": (
        {"formulation": "label_tokens", "label_tokens": {"verbalizer": {"pos": " good", "neg": " poor"}}}, 0.02),
    "label tokens, default ' neg'/' pos' (lr 0.02)": ({"formulation": "label_tokens"}, 0.02),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--base-model")
    parser.add_argument("--data")
    args = parser.parse_args()
    import torch

    from verifily_core.api import train
    from verifily_core.testing import make_classification_rows, write_jsonl
    from verifily_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    work = Path(tempfile.mkdtemp(prefix="bench-label-tokens-"))
    model = args.base_model or str(build_tiny_model("llama", work / "llama", pretrain_steps=60))
    if args.data:
        data = {s: str(Path(args.data) / f"{s}.jsonl") for s in ("train", "test")}
    else:
        data = {"train": str(write_jsonl(work / "train.jsonl", make_classification_rows(128, seed=1, pair=True))),
                "test": str(write_jsonl(work / "test.jsonl", make_classification_rows(48, seed=3, pair=True)))}
    labels = [json.loads(line)["label"] for line in Path(data["test"]).read_text().splitlines()]
    print(f"majority share of the test split: {max(labels.count(x) for x in set(labels)) / len(labels):.3f}")
    print(f"{'variant':48} {'epochs':>6} {'accuracy':>9} {'train s':>8} {'time vs head':>13}")
    for epochs in args.epochs:
        head_time = None
        for name, (options, lr) in VARIANTS.items():
            cfg = {"task": "classification", "base_model": model, "data_paths": data, "task_options": options,
                   "training": {"num_epochs": epochs, "batch_size": 16, "gradient_accumulation_steps": 1,
                                "learning_rate": lr, "logging_steps": 8, "save_steps": 10_000, "eval_steps": 10_000,
                                "max_seq_length": 64, "warmup_ratio": 0.0},
                   "lora": {"r": 8, "alpha": 16}, "eval": {"bootstrap_resamples": 0},
                   "data_checks": {"leakage": "off"}, "output": {"dir": str(work / "runs")}}
            start = time.perf_counter()
            run = train(cfg)
            meta = json.loads((run.path / "run_meta.json").read_text())
            seconds = meta["metrics"].get("train_runtime_s") or time.perf_counter() - start
            head_time = head_time or seconds
            acc = json.loads((run.path / "eval" / "eval_results.json").read_text())["overall"]["metrics"]["accuracy"]
            print(f"{name:48} {epochs:>6} {acc['value']:>9.3f} {seconds:>8.1f} {seconds / head_time:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
