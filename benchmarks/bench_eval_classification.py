"""Classification evaluation throughput: examples/s of the classification task's batched
`predict()` on a tiny encoder, at batch size 32 and (as the baseline) one row at a time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval_classification.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from verifily_core.config_loading import resolve_config
    from verifily_core.plugins import load_registries
    from verifily_core.testing import make_classification_rows
    from verifily_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model("bert", tmp)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}).eval()
        tok = AutoTokenizer.from_pretrained(path)
    rows = make_classification_rows(args.rows, seed=7, pair=True)
    cfg = resolve_config(data={"task": "classification", "base_model": "m", "data_paths": {"train": "t"},
                               "training": {"max_seq_length": 64}})
    task = load_registries().tasks.get("classification")
    options = task.parse_options({})
    results = {}
    for label, bs, n in (("batched", args.batch_size, args.rows), ("one at a time", 1, min(args.rows, 500))):
        start = time.perf_counter()
        task.predict(model, tok, rows[:n], "causal_lm", cfg, options, bs, "cpu")
        results[label] = n / (time.perf_counter() - start)
    for label, rate in results.items():
        print(f"{label:<14} {rate:9.1f} examples/s")
    print(f"speed-up (batched vs one at a time): {results['batched'] / results['one at a time']:.1f}x")


if __name__ == "__main__":
    main()
