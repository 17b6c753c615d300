"""Padding-free SFT training (`task_options.packing`): a packed batch gives every row the loss it
has alone, training packed and padded agree step by step, and a model that would mix packed
rows is never packed silently."""

from __future__ import annotations

import json

import pytest

from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_chat_rows, make_sft_rows, train_run, write_jsonl


@pytest.fixture(scope="module")
def llama(verifily_tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(verifily_tiny_llama_dir), AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)


def _features(tok, rows):
    sft = load_registries().tasks.get("sft")
    cfg = type("C", (), {"training": type("T", (), {"max_seq_length": 96})()})()
    return sft.prepare_features(rows, tok, "causal_lm", cfg, sft.parse_options({}))[0]


def test_a_packed_batch_gives_every_row_its_own_loss_and_the_padded_batch_loss(llama):
    import torch

    from verifily_sft.data import FlatCollator, PadCollator

    model, tok = llama
    feats = _features(tok, make_sft_rows(3, seed=4) + make_chat_rows(3, seed=5))
    assert len({len(f["input_ids"]) for f in feats}) > 2  # uneven rows: the padded batch has padding
    model.train()  # the collator packs training batches
    packed = FlatCollator(tok.pad_token_id, model)(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats)) and "attention_mask" not in packed
    padded = PadCollator(tok.pad_token_id)(feats)
    torch.manual_seed(0)
    with torch.no_grad():
        model.eval()  # no dropout; the packed batch is given as built above
        packed_out = model(**packed)
        padded_out = model(**padded, use_cache=False)
        assert abs(float(packed_out.loss) - float(padded_out.loss)) < 1e-5
        # per-row losses recovered from the packed logits equal each row's loss alone
        logits, labels = packed_out.logits[0, :-1], packed["labels"][0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        start = 0
        for f in feats:
            n = len(f["input_ids"])
            mask = labels[start:start + n - 1] != -100
            row_loss = float(nll[start:start + n - 1][mask].mean())
            alone = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]), use_cache=False)
            assert abs(row_loss - float(alone.loss)) < 1e-5
            start += n
    model.train()


def test_evaluation_batches_are_padded(llama):
    from verifily_sft.data import FlatCollator

    model, tok = llama
    feats = _features(tok, make_sft_rows(4, seed=1))
    collate = FlatCollator(tok.pad_token_id, model)
    model.eval()
    assert collate(feats)["input_ids"].shape[0] == 4 and "attention_mask" in collate(feats)
    model.train()


class _Leaky:
    """A CausalLM that ignores position ids: packed rows see each other."""

    def __init__(self, inner):
        self.inner, self.config = inner, inner.config

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, input_ids, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, use_cache=False)


def test_a_model_that_mixes_packed_rows_is_padded_or_refused(llama):
    from verifily_sft.data import FlatCollator, PadCollator, packs_exactly
    from verifily_sft.packing import training_collator

    model, tok = llama
    sft = load_registries().tasks.get("sft")
    assert packs_exactly(model, model.config.vocab_size)
    leaky = _Leaky(model)
    assert not packs_exactly(leaky, model.config.vocab_size)
    padded = PadCollator(tok.pad_token_id)
    assert isinstance(training_collator(model, tok, "causal_lm", padded, sft.parse_options({})), FlatCollator)
    assert training_collator(leaky, tok, "causal_lm", padded, sft.parse_options({})) is padded
    assert training_collator(model, tok, "causal_lm", padded, sft.parse_options({"packing": "off"})) is padded
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.packing: on, but this model mixes rows"):
        training_collator(leaky, tok, "causal_lm", padded, sft.parse_options({"packing": "on"}))
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.packing: on needs a CausalLM"):
        training_collator(model, tok, "seq2seq", padded, sft.parse_options({"packing": "on"}))


@pytest.mark.slow
def test_packed_and_padded_training_agree_step_by_step(tmp_path, verifily_tiny_llama_dir):
    rows = make_sft_rows(24, seed=1) + make_chat_rows(0)
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", make_sft_rows(8, seed=2))
    runs = {}
    for packing in ("on", "off"):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "task_options": {"packing": packing},
               "data_paths": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")},
               "data_checks": {"leakage": "off"},
               "training": {"max_steps": 6, "batch_size": 8, "max_seq_length": 64, "learning_rate": 0.01,
                            "logging_steps": 1},
               # no dropout: its random masks follow the tensor shapes, which packing changes
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "eval": {"metrics": ["loss", "token_f1"], "max_new_tokens": 4},
               "output": {"dir": str(tmp_path / packing)}}
        runs[packing] = train_run(cfg, tmp_path, packing)
    batches = {k: json.loads((r / "run_meta.json").read_text())["optimizations"]["batches"] for k, r in runs.items()}
    assert batches == {"on": "padding-free", "off": "padded"}  # the run says how it was batched
    assert {json.loads((r / "run_meta.json").read_text())["optimizations"]["parallelism"]
            for r in runs.values()} == {"none"}  # one process
    logs = {k: [json.loads(line) for line in (r / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]
            for k, r in runs.items()}
    assert [e["step"] for e in logs["on"]] == [e["step"] for e in logs["off"]] == list(range(1, 7))
    for on, off in zip(logs["on"], logs["off"]):
        assert on["loss"] == pytest.approx(off["loss"], rel=1e-4, abs=1e-5)
        assert on["tokens_seen"] == off["tokens_seen"]  # real tokens only, packed or padded
    results = {k: json.loads((r / "eval" / "eval_results.json").read_text())["overall"]["metrics"]
               for k, r in runs.items()}
    assert results["on"]["loss"]["value"] == pytest.approx(results["off"]["loss"]["value"], rel=1e-3)


def test_one_pass_evaluation_gives_what_the_two_separate_passes_give(llama):
    from verifily_sft.predict import generate, generate_and_score, reference_losses

    model, tok = llama
    model.eval()
    sft = load_registries().tasks.get("sft")
    options = sft.parse_options({})
    long_row = {"instruction": "Repeat the word.", "input": " ".join(["river"] * 60), "output": "river " * 10}
    rows = make_sft_rows(7, seed=3) + make_chat_rows(5, seed=4) + [long_row]  # the last is cut to fit
    texts, scores = generate_and_score(model, tok, rows, 48, options, 4, 6, "cpu")
    assert texts == generate(model, tok, rows, "causal_lm", 48, options, 4, 6, "cpu")
    for (loss, n, right), (loss2, n2, right2) in zip(scores, reference_losses(model, tok, rows, "causal_lm", 48,
                                                                               options, 4, "cpu")):
        assert (n, right) == (n2, right2) and loss == pytest.approx(loss2, abs=1e-5)
    model.train()


def test_a_batch_is_packed_only_when_that_costs_less():
    from verifily_sft.data import packing_pays

    assert packing_pays([30, 60, 20, 90, 15, 25, 40, 35], 256)  # short, uneven rows: padding dominates
    assert not packing_pays([512] * 8, 64)  # long even rows: 8x the attention for no padding saved
    assert not packing_pays([10] * 16, 256)  # no padding to save
    assert not packing_pays([100, 100], 0) and packing_pays([5, 5, 200], 4096)


def test_long_rows_are_padded_short_uneven_rows_packed(llama):
    from verifily_sft.data import FlatCollator

    model, tok = llama
    model.train()
    collate = FlatCollator(tok.pad_token_id, model)
    short = [{"input_ids": [5] * n, "labels": [5] * n, "attention_mask": [1] * n} for n in (3, 9, 4, 20)]
    long_rows = [{"input_ids": [5] * 480, "labels": [5] * 480, "attention_mask": [1] * 480} for _ in range(8)]
    assert collate(short)["input_ids"].shape == (1, 36)
    assert collate(long_rows)["input_ids"].shape == (8, 480)
