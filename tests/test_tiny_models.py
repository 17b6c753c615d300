"""The tiny offline models load through the real Auto classes, are deterministic and learn."""

from __future__ import annotations

import hashlib

import pytest

from verifily_core.testing import make_classification_rows, make_sft_rows
from verifily_core.testing.tiny_models import build_tiny_model


@pytest.mark.parametrize("fixture, auto", [
    ("tiny_llama_dir", "AutoModelForCausalLM"),
    ("tiny_t5_dir", "AutoModelForSeq2SeqLM"),
    ("tiny_bert_dir", "AutoModelForSequenceClassification"),
    ("tiny_deberta_dir", "AutoModelForSequenceClassification"),
    ("tiny_llama_dir", "AutoModelForSequenceClassification"),
])
def test_loads_offline_and_computes_a_loss(request, fixture, auto):
    import torch
    import transformers

    path = request.getfixturevalue(fixture)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = getattr(transformers, auto).from_pretrained(path)
    enc = tok(["Repeat the word. apple", "good day"], return_tensors="pt", padding=True)
    if auto == "AutoModelForSequenceClassification":
        out = model(**enc, labels=torch.tensor([0, 1]))
    elif auto == "AutoModelForSeq2SeqLM":
        out = model(**enc, labels=tok(["apple", "day"], return_tensors="pt", padding=True).input_ids)
    else:
        out = model(**enc, labels=enc.input_ids)
    assert torch.isfinite(out.loss)


def test_pair_encoding_has_two_segments(tiny_bert_dir):
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(tiny_bert_dir)("good movie", "the review is short")
    assert set(enc["token_type_ids"]) == {0, 1}
    assert enc["input_ids"].count(AutoTokenizer.from_pretrained(tiny_bert_dir).sep_token_id) == 2


def test_building_twice_is_byte_identical(tmp_path):
    a = build_tiny_model("llama", tmp_path / "a")
    b = build_tiny_model("llama", tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert hashlib.sha256((a / name).read_bytes()).digest() == hashlib.sha256((b / name).read_bytes()).digest()


def test_tiny_llama_learns_the_sft_task(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    texts = [f"{r['instruction']} {r['input']} -> {r['output']}" for r in make_sft_rows(32, seed=1)]
    enc = tok(texts, return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_corruption_changes_only_the_chosen_source():
    clean = make_sft_rows(60, seed=3)
    bad = make_sft_rows(60, seed=3, corrupt_source="ai_contaminated")
    changed = {r["tags"]["source"] for r, s in zip(clean, bad) if r != s}
    assert changed == {"ai_contaminated"}
    flipped = make_classification_rows(60, seed=3, flip_source="human")
    same = make_classification_rows(60, seed=3)
    assert {r["tags"]["source"] for r, s in zip(flipped, same) if r["label"] != s["label"]} == {"human"}
