"""QLoRA on CPU: 4-bit and 8-bit train, and 4-bit LoRA still learns after an evaluation pass."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows

pytestmark = pytest.mark.slow


def _lora_4bit(model_dir, fix: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifily_core.config import resolve_config
    from verifily_qlora.quantize import disable_cpu_repacking, init_kwargs

    cfg = resolve_config(data={"task": "sft", "base_model": str(model_dir), "data_paths": {"train": "x"},
                               "lora": {"quantization": "4bit"}})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **init_kwargs(cfg, "cpu"))
    if fix:
        disable_cpu_repacking(model)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [f"{r['instruction']} {r['input']} {r['output']}" for r in make_sft_rows(16, seed=1)]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    return model, batch, labels


def _step(model, batch, labels, opt):
    model.train()
    loss = model(**batch, labels=labels).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    ok = all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)  # lora_B starts at 0
    opt.step()
    opt.zero_grad()
    return loss.item(), ok


def _eval_pass(model, batch):
    import torch

    model.eval()
    with torch.no_grad():
        model(**batch)


def test_4bit_lora_keeps_learning_after_an_eval_pass(tiny_llama_dir):
    import torch

    model, batch, labels = _lora_4bit(tiny_llama_dir, fix=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first, ok = _step(model, batch, labels, opt)
    assert ok
    for _ in range(10):
        _eval_pass(model, batch)
        loss, ok = _step(model, batch, labels, opt)
        assert ok, "LoRA gradients vanished after an evaluation pass"
    assert loss < 0.9 * first


def test_without_the_fix_gradients_vanish_on_avx512bf16_cpus(tiny_llama_dir):
    import torch
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU lacks AVX512-BF16, so bitsandbytes never repacks 4-bit weights here")
    model, batch, labels = _lora_4bit(tiny_llama_dir, fix=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    assert _step(model, batch, labels, opt)[1]
    _eval_pass(model, batch)
    assert not _step(model, batch, labels, opt)[1]


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_verifily_train_quantized_on_cpu(tmp_path, tiny_llama_dir, bits):
    from verifily_core.testing import write_jsonl

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(48, seed=1))
    write_jsonl(data / "val.jsonl", make_sft_rows(8, seed=2))
    cfg = {"task": "sft", "base_model": str(tiny_llama_dir),
           "data_paths": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
           "training": {"num_epochs": 3, "batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                        "logging_steps": 3, "eval_steps": 4, "save_steps": 100, "max_seq_length": 64,
                        "warmup_ratio": 0.0},
           "lora": {"r": 8, "alpha": 16}, "eval": {"enabled": False}, "data_checks": {"leakage": "off"},
           "output": {"dir": str(tmp_path / "runs")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "c.yaml"), "--quantization", bits])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "runs").iterdir())
    losses = [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < 0.85 * losses[0], losses  # still learning after the eval passes at steps 4, 8, ...
    from verifily_core.config import TrainConfig

    assert TrainConfig.from_yaml(run / "config.yaml").lora.quantization == bits
