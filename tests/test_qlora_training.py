"""QLoRA at the plugin level on CPU: load with the plugin's init kwargs, prepare, LoRA, a few
optimizer steps with an evaluation pass between them. 4-bit keeps learning after evaluation
passes only with the repacking fix; 8-bit trains and its int8 inference path agrees."""

from __future__ import annotations

import pytest

import verifily_qlora
from verifily_core.config_loading import resolve_config
from verifily_core.testing import make_classification_rows, make_sft_rows

pytestmark = pytest.mark.slow


def _config(model_dir, bits, task="sft"):
    return resolve_config(data={"task": task, "base_model": str(model_dir), "data_paths": {"train": "x"},
                                "lora": {"quantization": bits}})


def _load(auto_class, model_dir, cfg, **kwargs):
    import torch
    import transformers

    torch.manual_seed(0)
    init = verifily_qlora.verifily_model_init_kwargs(config=cfg, device="cpu")
    return getattr(transformers, auto_class).from_pretrained(model_dir, **init, **kwargs)


def _lora(model, task_type, **extra):
    from peft import LoraConfig, get_peft_model

    import torch

    torch.manual_seed(0)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type=task_type, **extra))


def _causal_lm(model_dir, bits, prepare=True):
    from transformers import AutoTokenizer

    cfg = _config(model_dir, bits)
    model = _load("AutoModelForCausalLM", model_dir, cfg)
    if prepare:
        verifily_qlora.verifily_prepare_model(model=model, config=cfg)
    else:  # what a backend without the qlora fix would do
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [f"{r['instruction']} {r['input']} {r['output']}" for r in make_sft_rows(16, seed=1)]
    batch = dict(tok(texts, return_tensors="pt", padding=True))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model, batch


def _step(model, batch, opt) -> tuple[float, bool]:
    """One training step; True when every LoRA parameter got a gradient and some are nonzero
    (lora_B starts at zero, so lora_A's gradient is zero on the first step)."""
    model.train()
    loss = model(**batch).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    ok = bool(grads) and all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)
    opt.step()
    opt.zero_grad()
    return loss.item(), ok


def _eval_pass(model, batch) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def _train_with_evals(model, batch, steps=10, lr=1e-2) -> tuple[list[float], list[bool]]:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses, oks = [], []
    for _ in range(steps):
        loss, ok = _step(model, batch, opt)
        losses.append(loss)
        oks.append(ok)
        _eval_pass(model, batch)
    return losses, oks


def _has_avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def _packed_layers(model) -> int:
    import bitsandbytes as bnb

    return sum(1 for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)
               and getattr(m.weight.quant_state, "packing_format_for_cpu", False))


def test_4bit_lora_keeps_learning_after_evaluation_passes(verifily_tiny_llama_dir):
    import bitsandbytes as bnb

    model, batch = _causal_lm(verifily_tiny_llama_dir, "4bit")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    model = _lora(model, "CAUSAL_LM")
    losses, oks = _train_with_evals(model, batch)
    assert all(oks), "LoRA gradients vanished after an evaluation pass"
    assert _packed_layers(model) == 0
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.skipif("not _has_avx512bf16()", reason="bitsandbytes repacks 4-bit weights only on AVX512-BF16 CPUs")
def test_without_the_fix_gradients_vanish_after_one_evaluation_pass(verifily_tiny_llama_dir):
    model, batch = _causal_lm(verifily_tiny_llama_dir, "4bit", prepare=False)
    model = _lora(model, "CAUSAL_LM")
    losses, oks = _train_with_evals(model, batch, steps=4)
    assert oks[0] and not any(oks[1:])  # the first evaluation pass repacked the weights
    assert _packed_layers(model) > 0
    assert losses[-1] == pytest.approx(losses[1])  # nothing learns any more


@pytest.mark.skipif("not _has_avx512bf16()", reason="bitsandbytes repacks 4-bit weights only on AVX512-BF16 CPUs")
def test_the_fix_also_undoes_a_repacking_that_already_happened(verifily_tiny_llama_dir):
    cfg = _config(verifily_tiny_llama_dir, "4bit")
    model, batch = _causal_lm(verifily_tiny_llama_dir, "4bit", prepare=False)
    before = _eval_pass(model, batch)
    assert _packed_layers(model) > 0
    verifily_qlora.verifily_prepare_model(model=model, config=cfg)
    assert _packed_layers(model) == 0
    assert _eval_pass(model, batch) == pytest.approx(before, rel=1e-3)  # same weights after unpacking
    losses, oks = _train_with_evals(_lora(model, "CAUSAL_LM"), batch, steps=6)
    assert all(oks) and losses[-1] < losses[0]


def test_8bit_lora_learns_on_cpu_across_evaluation_passes(verifily_tiny_llama_dir):
    import bitsandbytes as bnb

    model, batch = _causal_lm(verifily_tiny_llama_dir, "8bit")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    model = _lora(model, "CAUSAL_LM")
    losses, oks = _train_with_evals(model, batch)
    assert all(oks)
    assert losses[-1] < 0.9 * losses[0], losses


def test_8bit_int8_inference_on_cpu_agrees_with_the_training_path(verifily_tiny_llama_dir):
    """In eval mode bitsandbytes multiplies in int8 on CPU; in train mode it dequantizes.
    Both must give the same loss within int8 rounding, or evaluation during training lies."""
    import torch

    model, batch = _causal_lm(verifily_tiny_llama_dir, "8bit")
    eval_loss = _eval_pass(model, batch)
    model.train()
    with torch.no_grad():
        train_loss = model(**batch).loss.item()
    assert eval_loss == pytest.approx(train_loss, rel=0.02)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_seq2seq_qlora_learns_after_evaluation_passes(verifily_tiny_t5_dir, bits):
    from transformers import AutoTokenizer

    cfg = _config(verifily_tiny_t5_dir, bits)
    model = _load("AutoModelForSeq2SeqLM", verifily_tiny_t5_dir, cfg)
    verifily_qlora.verifily_prepare_model(model=model, config=cfg)
    model = _lora(model, "SEQ_2_SEQ_LM")
    tok = AutoTokenizer.from_pretrained(verifily_tiny_t5_dir)
    rows = make_sft_rows(16, seed=1)
    batch = dict(tok([f"{r['instruction']} {r['input']}" for r in rows], return_tensors="pt", padding=True))
    labels = tok([r["output"] for r in rows], return_tensors="pt", padding=True).input_ids
    batch["labels"] = labels.masked_fill(labels == tok.pad_token_id, -100)
    losses, oks = _train_with_evals(model, batch)
    assert all(oks)
    assert losses[-1] < 0.9 * losses[0], losses


def test_sequence_classification_4bit_keeps_its_head_in_full_precision(verifily_tiny_bert_dir):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoTokenizer

    cfg = _config(verifily_tiny_bert_dir, "4bit", task="classification")
    model = _load("AutoModelForSequenceClassification", verifily_tiny_bert_dir, cfg, num_labels=2)
    assert type(model.classifier) is torch.nn.Linear
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.bert.modules())
    verifily_qlora.verifily_prepare_model(model=model, config=cfg)
    model = _lora(model, "SEQ_CLS", modules_to_save=["classifier"])
    tok = AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)
    rows = make_classification_rows(16, seed=1)
    labels = sorted({r["label"] for r in rows})
    batch = dict(tok([r["text"] for r in rows], return_tensors="pt", padding=True))
    batch["labels"] = torch.tensor([labels.index(r["label"]) for r in rows])
    losses, oks = _train_with_evals(model, batch, lr=3e-2)
    assert all(oks)
    assert losses[-1] < 0.9 * losses[0], losses
