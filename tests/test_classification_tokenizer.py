"""Tokenizer options of the classification task (``task_options.truncation``/``padding``) at the
token level, and the data-loading settings (``training.dataloader_*``): validated, left out of
the config hash, and without effect on results (workers only collate rows)."""

from __future__ import annotations

import json

import pytest

from verifily_core.api import train
from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl

from verifily_classification.data import collator, encode, features
from verifily_classification.labels import LabelSet
from verifily_classification.options import parse_options


@pytest.fixture(scope="module")
def bert_tok(verifily_tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)


LONG = "good " * 30  # 30 tokens
PAIR = "the review is short and clear"  # 7 tokens
PAIRS = f"{PAIR} {PAIR}"


def _sides(tok, ids):
    """The tokens of the text and of the pair of a ``[CLS] text [SEP] pair [SEP]`` row."""
    sep = ids.index(tok.sep_token_id)
    return ids[1:sep], ids[sep + 1:-1]


@pytest.mark.parametrize("strategy, cut_text, cut_pair", [
    ("longest_first", True, False),  # the text is the longer side
    ("only_first", True, False),
    ("only_second", False, True),
])
def test_pair_truncation_cuts_the_intended_side(bert_tok, strategy, cut_text, cut_pair):
    full_text = bert_tok(LONG, add_special_tokens=False)["input_ids"]
    full_pair = bert_tok(PAIRS, add_special_tokens=False)["input_ids"]
    assert len(full_text) > len(full_pair) + 4
    enc, cut = encode(bert_tok, {"text": LONG, "text_pair": PAIRS}, len(full_text) + 3 + len(full_pair) - 4, strategy)
    text, pair = _sides(bert_tok, enc["input_ids"])
    assert cut and len(enc["input_ids"]) == len(full_text) + 3 + len(full_pair) - 4
    assert (text == full_text[:len(text)], len(text) < len(full_text)) == (True, cut_text)
    assert (pair == full_pair[:len(pair)], len(pair) < len(full_pair)) == (True, cut_pair)
    assert enc["token_type_ids"][-len(pair) - 1:] == [1] * (len(pair) + 1)


def test_longest_first_cuts_the_longer_side_down_to_the_other(bert_tok):
    text = bert_tok(LONG, add_special_tokens=False)["input_ids"]
    pair = bert_tok(PAIR, add_special_tokens=False)["input_ids"]
    assert len(text) > len(pair) + 2
    enc, _ = encode(bert_tok, {"text": LONG, "text_pair": PAIR}, 3 + 2 * len(pair) - 2, "longest_first")
    a, b = _sides(bert_tok, enc["input_ids"])
    assert (len(a), len(b)) == (len(pair) - 1, len(pair) - 1)  # both cut once the text is no longer longer


def test_a_side_too_short_to_cut_is_a_data_error_naming_the_row(bert_tok):
    rows = [{"text": "good", "text_pair": PAIR, "label": "pos"}, {"text": "good", "text_pair": PAIRS, "label": "neg"}]
    with pytest.raises(DataError, match=r"^train row 2: with task_options.truncation only_first the text_pair alone "
                                        r"is longer than training.max_seq_length \(12 tokens\)"):
        features(rows, bert_tok, LabelSet(["neg", "pos"]), 12, split="train", truncation="only_first")
    # a row without a pair has its text cut, whatever the strategy
    enc, cut = encode(bert_tok, {"text": LONG}, 8, "only_second")
    assert cut and len(enc["input_ids"]) == 8


def test_padding_longest_or_max_length(bert_tok):
    feats, _ = features([{"text": "good", "label": "pos"}, {"text": "good day", "label": "neg"}], bert_tok,
                        LabelSet(["neg", "pos"]), 16)
    longest = collator(bert_tok)(feats)
    fixed = collator(bert_tok, "max_length", 16)(feats)
    assert longest["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats)
    assert fixed["input_ids"].shape == (2, 16) and fixed["attention_mask"].sum() == longest["attention_mask"].sum()


def _config(**extra):
    base = {"task": "classification", "base_model": "org/model", "data_paths": {"train": "t.jsonl"}}
    return TrainConfig.from_dict({**base, **extra})


def test_tokenizer_options_are_checked_and_hashed_and_dataloader_options_are_not():
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.truncation: expected one of longest_first, "
                                          r"only_first, only_second, got 'left'"):
        parse_options({"truncation": "left"})
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.padding: expected one of longest, max_length"):
        parse_options({"padding": "do_not_pad"})
    plain = _config().to_hash()
    assert _config(task_options={"truncation": "only_second"}).to_hash() != plain
    assert _config(task_options={"padding": "max_length"}).to_hash() != plain
    loading = {"dataloader_num_workers": 2, "dataloader_pin_memory": False}
    assert _config(training=loading).to_hash() == plain
    # persistent workers skip torch's per-epoch draw of a worker seed from the global RNG, so
    # dropout masks from the second epoch on differ: that one is part of the hash
    persistent = {"dataloader_num_workers": 2, "dataloader_persistent_workers": True}
    assert _config(training=persistent).to_hash() != plain


@pytest.mark.parametrize("training, compute, message", [
    ({"dataloader_num_workers": -1}, {}, "$.training.dataloader_num_workers: must be >= 0"),
    ({"dataloader_persistent_workers": True}, {},
     "$.training.dataloader_persistent_workers: keeps worker processes alive between epochs and needs "
     "training.dataloader_num_workers >= 1"),
    ({"dataloader_pin_memory": True}, {"device": "cpu"},
     "$.training.dataloader_pin_memory: pinned memory speeds up copies to a CUDA device and compute.device is cpu"),
    ({"dataloader_num_workers": "two"}, {}, "$.training.dataloader_num_workers: expected int"),
])
def test_dataloader_options_are_validated(training, compute, message):
    try:
        problems = _config(training=training, compute=compute).problems(load_registries())
    except ConfigError as exc:
        problems = [str(exc)]
    assert any(p.removeprefix("config: ").startswith(message) for p in problems), problems


def test_pin_memory_follows_the_resolved_device():
    from verifily_core.modeling import dataloader_flags

    t = _config().training
    assert dataloader_flags(t, "cpu") == {"dataloader_num_workers": 0, "dataloader_pin_memory": False,
                                          "dataloader_persistent_workers": False}
    assert dataloader_flags(t, "cuda")["dataloader_pin_memory"] is True
    with pytest.raises(ConfigError, match=r"^\$\.training\.dataloader_pin_memory: .* this run trains on cpu"):
        dataloader_flags(_config(training={"dataloader_pin_memory": True}).training, "cpu")


@pytest.mark.slow
def test_worker_processes_give_the_metrics_of_the_training_process(tmp_path, verifily_tiny_bert_dir):
    data = {"train": write_jsonl(tmp_path / "train.jsonl", make_classification_rows(48, seed=1, pair=True)),
            "val": write_jsonl(tmp_path / "val.jsonl", make_classification_rows(16, seed=2, pair=True)),
            "test": write_jsonl(tmp_path / "test.jsonl", make_classification_rows(16, seed=3, pair=True))}
    out = {}
    for workers in (0, 2):
        cfg = {"task": "classification", "base_model": str(verifily_tiny_bert_dir),
               "data_paths": {k: str(v) for k, v in data.items()}, "data_checks": {"leakage": "off"},
               "task_options": {"truncation": "only_second", "padding": "max_length"},
               "training": {"max_steps": 6, "batch_size": 8, "learning_rate": 0.01, "max_seq_length": 24,
                            "logging_steps": 1, "eval_steps": 3, "save_steps": 3, "dataloader_num_workers": workers},
               "lora": {"r": 4, "alpha": 8}, "eval": {"bootstrap_resamples": 0},
               "output": {"dir": str(tmp_path / f"w{workers}")}}
        run = train(cfg)
        out[workers] = (json.loads((run.path / "hashes.json").read_text())["config_hash"],
                        (run.path / "train_log.jsonl").read_text().count('"eval_loss"'),
                        [(e.get("loss"), e.get("eval_loss")) for e in map(json.loads, (run.path / "train_log.jsonl")
                                                                          .read_text().splitlines())],
                        json.loads((run.path / "eval" / "eval_results.json").read_text())["overall"]["metrics"],
                        (run.path / "eval" / "predictions.jsonl").read_text())
    assert out[0][1] == 2  # evaluated on the val split twice, in workers for the second run
    assert out[0] == out[2]


@pytest.mark.slow
def test_padding_free_sft_batches_work_in_worker_processes(tmp_path, verifily_tiny_llama_dir):
    train_rows = write_jsonl(tmp_path / "train.jsonl", make_sft_rows(24, seed=1))
    val_rows = write_jsonl(tmp_path / "val.jsonl", make_sft_rows(8, seed=2))
    logs = {}
    for workers in (0, 2):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "task_options": {"packing": "on"},
               "data_paths": {"train": str(train_rows), "val": str(val_rows)}, "data_checks": {"leakage": "off"},
               "training": {"max_steps": 4, "batch_size": 8, "max_seq_length": 64, "learning_rate": 0.01,
                            "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "dataloader_num_workers": workers},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "eval": {"enabled": False},
               "output": {"dir": str(tmp_path / f"w{workers}")}}
        run = train(cfg)
        logs[workers] = [{k: e[k] for k in ("loss", "eval_loss", "tokens_seen") if k in e}
                         for e in map(json.loads, (run.path / "train_log.jsonl").read_text().splitlines())]
    assert sum("eval_loss" in e for e in logs[0]) == 2
    assert logs[0] == logs[2]
