"""Training throughput and peak memory: `verifily train` vs a plain Trainer + PEFT script.

Both train the same tiny Llama (built offline), on the same SFT rows, with the same prompt
masking, LoRA settings and hyperparameters, each in its own process, alternating for
--repeats rounds. Prints the best tokens/s of each (trained tokens / Trainer train_runtime),
their ratio and the median of the per-round ratios (target: at least 0.95), and each process's
peak resident memory (target: ours at most 1.1x the plain script's). The whole process time
(imports, loading, hashing, writing the run) is shown for information.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_throughput.py [--rows 1024 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = r'''
import json, sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed
model_dir, data, out, epochs, bs, lr, max_len = sys.argv[1:8]
torch.set_num_threads(1)
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data)]
feats = []
for r in rows:
    prompt = f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r['input']}\n\n### Response:\n"
    p = tok(prompt)["input_ids"]
    o = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + o)[: int(max_len)]
    feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ([-100] * len(p) + o)[: int(max_len)]})
def collate(batch):
    w = max(len(f["input_ids"]) for f in batch)
    pad = {"input_ids": tok.pad_token_id, "attention_mask": 0, "labels": -100}
    return {k: torch.tensor([f[k] + [pad[k]] * (w - len(f[k])) for f in batch]) for k in pad}
set_seed(42)
model = AutoModelForCausalLM.from_pretrained(model_dir)
set_seed(42)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir=out, num_train_epochs=float(epochs), per_device_train_batch_size=int(bs),
                         learning_rate=float(lr), lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.01,
                         logging_steps=10, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
                         seed=42, data_seed=42, remove_unused_columns=False)
res = Trainer(model=model, args=args, train_dataset=feats, data_collator=collate).train()
model.save_pretrained(out + "/adapter")
print(json.dumps({"train_runtime": res.metrics["train_runtime"], "loss": res.training_loss}))
'''


def _run(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a child; return its stdout, peak RSS in MiB (from wait4, this child only) and wall seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed with {proc.returncode}")
    return out, usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

    from transformers.utils import logging as hf_logging

    from verifily_core.testing import make_sft_rows, write_jsonl

    hf_logging.disable_progress_bar()
    from verifily_core.testing.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_model("llama", tmp_path / "model")
        data = write_jsonl(tmp_path / "train.jsonl", [{k: v for k, v in r.items() if k != "tags"}
                                                       for r in make_sft_rows(args.rows, seed=1)])
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        tokens = 0
        for line in data.read_text().splitlines():
            r = json.loads(line)
            prompt = f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r['input']}\n\n### Response:\n"
            tokens += min(len(tok(prompt)["input_ids"]) + len(tok(r["output"], add_special_tokens=False)["input_ids"]) + 1, 64)
        tokens *= args.epochs
        config = {"task": "sft", "base_model": str(model), "data_paths": {"train": str(data)},
                  "training": {"num_epochs": args.epochs, "batch_size": 8, "gradient_accumulation_steps": 1,
                               "learning_rate": 5e-3, "max_seq_length": 64, "logging_steps": 10, "save_steps": 10**6},
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "eval": {"enabled": False},
                  "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
        import yaml

        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        script = tmp_path / "plain.py"
        script.write_text(PLAIN)
        ours_cmd = [sys.executable, "-c", "from verifily_core.cli import main; main()", "train",
                    "--config", str(tmp_path / "c.yaml"), "--format", "json"]
        plain_cmd = [sys.executable, str(script), str(model), str(data), str(tmp_path / "plain"), str(args.epochs),
                     "8", "5e-3", "64"]
        ours, plain = {"tps": [], "rss": [], "wall": []}, {"tps": [], "rss": [], "wall": []}
        for _ in range(args.repeats):
            out, rss, wall = _run(ours_cmd, env)
            ours["tps"].append(tokens / json.loads(out)["metrics"]["train_runtime_s"])
            ours["rss"].append(rss)
            ours["wall"].append(wall)
            out, rss, wall = _run(plain_cmd, env)
            plain["tps"].append(tokens / json.loads(out.strip().splitlines()[-1])["train_runtime"])
            plain["rss"].append(rss)
            plain["wall"].append(wall)
    # best of the rounds: on a shared machine the fastest round is the least disturbed one
    o_tps, p_tps = max(ours["tps"]), max(plain["tps"])
    paired = statistics.median(o / p for o, p in zip(ours["tps"], plain["tps"]))  # neighbours share conditions
    o_rss, p_rss = statistics.median(ours["rss"]), statistics.median(plain["rss"])
    print(f"{'':<18}{'tokens/s':>12}{'peak RSS MiB':>15}{'process s':>12}")
    print(f"{'verifily train':<18}{o_tps:>12.0f}{o_rss:>15.0f}{statistics.median(ours['wall']):>12.1f}")
    print(f"{'plain script':<18}{p_tps:>12.0f}{p_rss:>15.0f}{statistics.median(plain['wall']):>12.1f}")
    print(f"throughput ratio (ours / plain): {o_tps / p_tps:.2f} best vs best, {paired:.2f} median of paired rounds   "
          f"memory ratio (ours / plain): {o_rss / p_rss:.2f}")


if __name__ == "__main__":
    main()
