"""Compute spent on padding: `verifily train` / `verifily eval` vs the plain padded loops, on rows
of skewed length, in one process, alternating for --repeats rounds (best round of each shown).

1. SFT training tokens/s (real tokens / Trainer train_runtime): ours (padding-free batches,
   `task_options.packing: auto`) vs a plain Trainer + PEFT script padding each random batch, same
   rows, prompt masking, LoRA and hyperparameters; ours with `packing: off` as the control.
   Target: at least 1.5x, at an equal final training loss.
2. Classification training time: ours with `training.group_by_length` vs the plain padded
   Trainer in random order. Target: at most 0.7x.
3. Evaluation rows/s: classification scoring and SFT generation in batches of similar length
   (ours) vs the same code in input order, and the SFT evaluation (loss + generation) vs a
   plain batched greedy loop. Targets: at least 1.3x; no slower than the plain loop.

The models are Llama and BERT architectures of a few million parameters (by default 4 layers,
256 wide; `--hidden`/`--layers` for bigger ones) built offline, so compute, not Python overhead,
dominates more the bigger they are; the rows mix short and long inputs
(most a few words, a tail up to ~200 tokens), as real text does.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_padding.py [--rows 512 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_LEN = 256


def skewed_words(rng: random.Random) -> int:
    """Words in an input: mostly a few, a long tail (lognormal, capped)."""
    return max(1, min(120, int(rng.lognormvariate(1.6, 1.1))))


def sft_rows(n: int, seed: int) -> list[dict]:
    from verifily_core.testing import make_sft_rows

    rng = random.Random(seed)
    rows = []
    for r in make_sft_rows(n, seed=seed):
        filler = " ".join(rng.choice(("the", "river", "stone", "cloud", "music")) for _ in range(skewed_words(rng)))
        rows.append({"instruction": r["instruction"], "input": f"{filler} {r['input']}", "output": r["output"]})
    return rows


def cls_rows(n: int, seed: int) -> list[dict]:
    from verifily_core.testing import make_classification_rows

    rng = random.Random(seed)
    return [{"text": r["text"] + " " + " ".join(rng.choice(("the", "movie", "was", "really")) for _ in range(skewed_words(rng))),
             "label": r["label"]} for r in make_classification_rows(n, seed=seed)]


def build_models(root: Path, hidden: int = 256, layers: int = 4) -> dict[str, Path]:
    """A Llama and a BERT, ``layers`` layers ``hidden`` wide, with the tiny models' tokenizers."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from verifily_core.testing.tiny_models import build_tiny_model

    out = {}
    for kind, cls in (("llama", AutoModelForCausalLM), ("bert", AutoModelForSequenceClassification)):
        path = build_tiny_model(kind, root / kind)
        config = cls.from_pretrained(path).config
        for key, value in (("hidden_size", hidden), ("intermediate_size", hidden * 8 // 3), ("num_hidden_layers", layers)):
            setattr(config, key, value)
        cls.from_config(config).save_pretrained(path)
        AutoTokenizer.from_pretrained(path)
        out[kind] = path
    return out


def ours_train(config: dict, root: Path, name: str) -> dict:
    from verifily_core.api import train

    config = {**config, "output": {"dir": str(root / name)}}
    run = train(config)
    return json.loads((Path(run.path) / "run_meta.json").read_text())["metrics"]


PLAIN_ARGS = dict(lr_scheduler_type="cosine", weight_decay=0.01, logging_steps=10**6, save_strategy="no",
                  report_to=[], disable_tqdm=True, use_cpu=True, seed=42, data_seed=42, remove_unused_columns=False)


def plain_sft(model_dir: Path, rows: list[dict], epochs: int, bs: int, lr: float) -> tuple[float, float, int]:
    """The plain loop: prompt masking, random order, each batch padded; (runtime s, loss, tokens)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    tok = AutoTokenizer.from_pretrained(model_dir)
    feats = []
    for r in rows:
        p = tok(f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r['input']}\n\n### Response:\n")["input_ids"]
        o = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p + o)[:MAX_LEN]
        feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ([-100] * len(p) + o)[:MAX_LEN]})

    def collate(batch):
        w = max(len(f["input_ids"]) for f in batch)
        pad = {"input_ids": tok.pad_token_id, "attention_mask": 0, "labels": -100}
        return {k: torch.tensor([f[k] + [pad[k]] * (w - len(f[k])) for f in batch]) for k in pad}

    set_seed(42)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=bs,
                                 learning_rate=lr, warmup_steps=0.03, **PLAIN_ARGS)
        res = Trainer(model=model, args=args, train_dataset=feats, data_collator=collate).train()
    tokens = sum(len(f["input_ids"]) for f in feats) * epochs
    return res.metrics["train_runtime"], res.training_loss, tokens


def padding_share(lengths: list[int], bs: int, seed: int = 0) -> float:
    """The share of padded positions in batches of ``bs`` rows drawn in random order."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


def plain_cls(model_dir: Path, rows: list[dict], epochs: int, bs: int, lr: float) -> tuple[float, float]:
    """The plain classification loop in random order, each batch padded; (runtime s, loss)."""
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    tok = AutoTokenizer.from_pretrained(model_dir)
    names = sorted({r["label"] for r in rows})
    feats = [{**tok(r["text"], truncation=True, max_length=MAX_LEN), "labels": names.index(r["label"])} for r in rows]
    set_seed(42)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(names)),
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="SEQ_CLS"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=bs,
                                 learning_rate=lr, warmup_steps=0.03, **PLAIN_ARGS)
        res = Trainer(model=model, args=args, train_dataset=feats, data_collator=DataCollatorWithPadding(tok)).train()
    return res.metrics["train_runtime"], res.training_loss


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval-rows", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256, help="model width (heads: 4)")
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from verifily_core.testing import write_jsonl

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    bs, lr = 16, 5e-3
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_models(root, args.hidden, args.layers)
        srows, crows = sft_rows(args.rows, 1), cls_rows(args.rows, 2)
        write_jsonl(root / "sft.jsonl", srows)
        write_jsonl(root / "cls.jsonl", crows)
        common = {"training": {"num_epochs": args.epochs, "batch_size": bs, "gradient_accumulation_steps": 1,
                               "learning_rate": lr, "max_seq_length": MAX_LEN, "logging_steps": 10**6,
                               "save_steps": 10**6, "warmup_ratio": 0.03},
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.0}, "eval": {"enabled": False},
                  "data_checks": {"leakage": "off"}}
        sft = {**common, "task": "sft", "base_model": str(models["llama"]), "data_paths": {"train": str(root / "sft.jsonl")}}
        cls = {**common, "task": "classification", "base_model": str(models["bert"]),
               "data_paths": {"train": str(root / "cls.jsonl")}}
        results: dict[str, list] = {k: [] for k in ("packed", "padded-ours", "plain-sft", "grouped", "plain-cls")}
        for i in range(args.repeats):
            m = ours_train({**sft, "task_options": {"packing": "on"}}, root, f"p{i}")
            results["packed"].append((m["train_runtime_s"], m["train_loss"]))
            m = ours_train({**sft, "task_options": {"packing": "off"}}, root, f"o{i}")
            results["padded-ours"].append((m["train_runtime_s"], m["train_loss"]))
            runtime, loss, tokens = plain_sft(models["llama"], srows, args.epochs, bs, lr)
            results["plain-sft"].append((runtime, loss))
            m = ours_train({**cls, "training": {**cls["training"], "group_by_length": True}}, root, f"g{i}")
            results["grouped"].append((m["train_runtime_s"], m["train_loss"]))
            results["plain-cls"].append(plain_cls(models["bert"], crows, args.epochs, bs, lr))
        best = {k: min(v) for k, v in results.items()}
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(models["llama"])
        lengths = [min(MAX_LEN, len(tok(f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r['input']}\n\n"
                                         f"### Response:\n{r['output']}")["input_ids"]) + 1) for r in srows]
        print(f"SFT training, {args.rows} rows x {args.epochs} epoch(s), {tokens} real tokens, batch {bs}; "
              f"padding in random batches: {padding_share(lengths, bs):.0%}")
        for key, label in (("packed", "ours, packed"), ("padded-ours", "ours, padded"), ("plain-sft", "plain padded")):
            print(f"  {label:<14} {tokens / best[key][0]:>9.0f} tokens/s   final train loss {best[key][1]:.4f}")
        print(f"  tokens/s ratio packed / plain: {best['plain-sft'][0] / best['packed'][0]:.2f}x "
              f"(ours padded / plain: {best['plain-sft'][0] / best['padded-ours'][0]:.2f}x)")
        print(f"Classification training: grouped {best['grouped'][0]:.1f} s (loss {best['grouped'][1]:.4f}), plain "
              f"{best['plain-cls'][0]:.1f} s (loss {best['plain-cls'][1]:.4f}); time ratio "
              f"{best['grouped'][0] / best['plain-cls'][0]:.2f}x")
        evaluation(models, args.eval_rows)


def evaluation(models: dict[str, Path], n: int) -> None:
    """Rows/s of our length-sorted prediction vs input order, and SFT eval vs a plain greedy loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import verifily_core.batching as batching
    from verifily_core.config_loading import resolve_config
    from verifily_core.plugins import load_registries
    from verifily_classification.labels import resolve_labels

    regs = load_registries()
    in_order = lambda lengths, bs: [list(range(i, min(i + bs, len(lengths)))) for i in range(0, len(lengths), bs)]  # noqa: E731
    sorted_batches = batching.length_sorted_batches

    crows = cls_rows(n, 5)
    cmodel = AutoModelForSequenceClassification.from_pretrained(models["bert"], num_labels=2).eval()
    ctok = AutoTokenizer.from_pretrained(models["bert"])
    ctask = regs.tasks.get("classification")
    ccfg = resolve_config(data={"task": "classification", "base_model": "m", "data_paths": {"train": "t"},
                                "training": {"max_seq_length": MAX_LEN}})
    from verifily_classification import predict as cpredict

    labels = resolve_labels(None, crows)
    timings = {}
    for label, batches in (("sorted", sorted_batches), ("in order", in_order)):
        batching.length_sorted_batches = batches
        timings[label] = min(timed(cpredict.predict, cmodel, ctok, crows, labels, MAX_LEN, 32, "cpu") for _ in range(2))
    batching.length_sorted_batches = sorted_batches
    print(f"Classification scoring, {n} rows: sorted {n / timings['sorted']:.0f} rows/s, input order "
          f"{n / timings['in order']:.0f} rows/s, ratio {timings['in order'] / timings['sorted']:.2f}x")
    del ctask, ccfg

    srows = sft_rows(n, 6)
    model = AutoModelForCausalLM.from_pretrained(models["llama"]).eval()
    tok = AutoTokenizer.from_pretrained(models["llama"])
    task = regs.tasks.get("sft")
    options = task.parse_options({})
    cfg = resolve_config(data={"task": "sft", "base_model": "m", "data_paths": {"train": "t"},
                               "training": {"max_seq_length": MAX_LEN}, "eval": {"max_new_tokens": 8}})
    from verifily_sft.data import pad, prompt_ids

    def plain_greedy():
        prompts = [prompt_ids(tok, r, "causal_lm", options) for r in srows]
        with torch.no_grad():
            for i in range(0, len(prompts), 16):
                chunk = prompts[i:i + 16]
                ids = torch.tensor(pad(chunk, tok.pad_token_id, True))
                mask = torch.tensor(pad([[1] * len(c) for c in chunk], 0, True))
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    t = {}
    t["ours"] = min(timed(task.predict, model, tok, srows, "causal_lm", cfg, options, 16, "cpu") for _ in range(2))
    t["plain"] = min(timed(plain_greedy) for _ in range(2))
    batching.length_sorted_batches = in_order
    t["ours, input order"] = min(timed(task.predict, model, tok, srows, "causal_lm", cfg, options, 16, "cpu")
                                 for _ in range(2))
    batching.length_sorted_batches = sorted_batches
    print(f"SFT evaluation (loss + generation), {n} rows: ours {n / t['ours']:.1f} rows/s, ours in input order "
          f"{n / t['ours, input order']:.1f} rows/s, plain batched greedy loop (generation only, input order) "
          f"{n / t['plain']:.1f} rows/s; ours / plain time ratio {t['ours'] / t['plain']:.2f}x")


if __name__ == "__main__":
    main()
