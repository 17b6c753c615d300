"""Attribution time against training time: ``verifily attribute`` on a run as a multiple of what
training that run took, on the same machine in one process.

By default a small encoder (the BERT of ``bench_padding.py``, --hidden wide, --layers deep,
built offline) is trained with LoRA and a head on 2,000 synthetic sentiment rows for
--epochs epochs, then every training row is scored against 500 test rows (``final`` method,
default projection), and with --with-snapshots also by ``ensemble`` and ``tracin`` over
--snapshots snapshots. The target is at most
1x: explaining a run should cost no more than making it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_attribution.py [--train 2000 --test 500 --epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--with-snapshots", action="store_true",
                        help="Keep snapshots and also time --method ensemble and tracin over them.")
    args = parser.parse_args()
    import torch

    from bench_padding import build_models
    from verifily_core.api import attribute, train
    from verifily_core.testing import make_classification_rows, write_jsonl

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    work = Path(tempfile.mkdtemp(prefix="bench-attribution-"))
    model = build_models(work, args.hidden, args.layers)["bert"]
    data = {"train": str(write_jsonl(work / "train.jsonl", make_classification_rows(args.train, seed=1))),
            "test": str(write_jsonl(work / "test.jsonl", make_classification_rows(args.test, seed=3)))}
    cfg = {"task": "classification", "base_model": str(model), "data_paths": data,
           "training": {"num_epochs": args.epochs, "batch_size": 16, "gradient_accumulation_steps": 1,
                        "learning_rate": 0.002, "logging_steps": 50, "save_steps": 100_000, "eval_steps": 100_000,
                        "max_seq_length": 32, "attribution_checkpoints": args.snapshots if args.with_snapshots else 0},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "eval": {"bootstrap_resamples": 50},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(work / "runs")}}
    run = train(cfg)
    train_s = float(run.metrics["train_runtime_s"])
    print(f"model: BERT hidden {args.hidden}, {args.layers} layers; {args.train} training rows, {args.test} test rows, "
          f"{run.metrics['train_steps']} steps")
    print(f"{'what':44} {'seconds':>8} {'x training':>11}")
    print(f"{'training (Trainer runtime)':44} {train_s:8.2f} {1.0:11.2f}")
    methods = ["final", "ensemble", "tracin"] if args.with_snapshots else ["final"]
    for method in methods:
        started = time.perf_counter()
        result = attribute(run.path, method=method)
        took = time.perf_counter() - started
        label = f"attribute --method {method} ({result.settings['features']} features)"
        print(f"{label:44} {took:8.2f} {took / train_s:11.2f}")


if __name__ == "__main__":
    main()
