"""The sft task's data side: prompt template, options, prompt masking, truncation, padding."""

from __future__ import annotations

import pytest

from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries

ROW = {"instruction": "Repeat the word.", "input": "apple", "output": "apple"}


@pytest.fixture(scope="module")
def sft():
    return load_registries().tasks.get("sft")


@pytest.fixture(scope="module")
def llama_tok(verifily_tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)


@pytest.fixture(scope="module")
def t5_tok(verifily_tiny_t5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifily_tiny_t5_dir)


class Cfg:
    """The two config fields the task reads."""

    def __init__(self, max_len: int) -> None:
        self.training = type("T", (), {"max_seq_length": max_len})()


def test_default_template_with_and_without_input(sft):
    opts = sft.parse_options({})
    assert opts.render(ROW) == "### Instruction:\nRepeat the word.\n\n### Input:\napple\n\n### Response:\n"
    assert opts.render({**ROW, "input": ""}) == "### Instruction:\nRepeat the word.\n\n### Response:\n"
    custom = sft.parse_options({"prompt_template": "Q: {instruction} {input}\nA:"})
    assert custom.render(ROW) == "Q: Repeat the word. apple\nA:"


@pytest.mark.parametrize("options, field, words", [
    ({"prompt_tmpl": "x"}, "$.task_options.prompt_tmpl", "unknown"),
    ({"prompt_template": "{instruction} {context}"}, "$.task_options.prompt_template", "{context}"),
    ({"prompt_template": "{input} only"}, "$.task_options.prompt_template", "{instruction}"),
    ({"prompt_template": "{instruction} {"}, "$.task_options.prompt_template", "braces"),
    ({"use_chat_template": "yes"}, "$.task_options.use_chat_template", "bool"),
    ({"assistant_turns": "first"}, "$.task_options.assistant_turns", "all, last"),
    ({"chat_template": " "}, "$.task_options.chat_template", "empty"),
    ({"use_chat_template": True, "prompt_template": "{instruction}"}, "$.task_options.prompt_template", "one"),
])
def test_bad_options_name_their_field(sft, options, field, words):
    with pytest.raises(ConfigError) as err:
        sft.parse_options(options)
    assert str(err.value).startswith(field) and words in str(err.value)


def test_causal_lm_loss_covers_only_the_output_and_eos(sft, llama_tok):
    opts = sft.parse_options({})
    feats, stats = sft.prepare_features([ROW], llama_tok, "causal_lm", Cfg(128), opts)
    f = feats[0]
    prompt = llama_tok(opts.render(ROW))["input_ids"]
    assert f["input_ids"][:len(prompt)] == prompt and f["labels"][:len(prompt)] == [-100] * len(prompt)
    learned = f["labels"][len(prompt):]
    assert learned == f["input_ids"][len(prompt):] and learned[-1] == llama_tok.eos_token_id
    assert llama_tok.decode(learned, skip_special_tokens=True).strip() == "apple"
    assert stats == {"rows": 1, "truncated": 0}


def test_chat_template_prompt_has_one_bos(sft, llama_tok):
    opts = sft.parse_options({"use_chat_template": True, "system_prompt": "Be brief."})
    feats, _ = sft.prepare_features([ROW], llama_tok, "causal_lm", Cfg(128), opts)
    ids = feats[0]["input_ids"]
    assert ids.count(llama_tok.bos_token_id) == 1 and ids[0] == llama_tok.bos_token_id
    text = llama_tok.decode(ids)
    assert text.startswith("<s><|system|>\nBe brief.\n<|user|>\nRepeat the word.\n\napple\n<|assistant|>\napple</s>")
    learned = [t for t in feats[0]["labels"] if t != -100]
    assert llama_tok.decode(learned) == "apple</s>\n"


def test_chat_template_needs_a_tokenizer_that_has_one(sft, t5_tok):
    opts = sft.parse_options({"use_chat_template": True})
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.use_chat_template: .* no chat template"):
        sft.prepare_features([ROW], t5_tok, "seq2seq", Cfg(64), opts)


def test_seq2seq_output_is_the_target(sft, t5_tok):
    opts = sft.parse_options({})
    feats, stats = sft.prepare_features([ROW], t5_tok, "seq2seq", Cfg(128), opts)
    f = feats[0]
    assert f["input_ids"] == t5_tok(opts.render(ROW))["input_ids"]
    assert f["labels"] == t5_tok("apple")["input_ids"] and -100 not in f["labels"]
    assert stats["truncated"] == 0


def test_truncation_is_counted_and_keeps_the_response_marker(sft, llama_tok):
    opts = sft.parse_options({})
    long_row = {**ROW, "input": " ".join(["river"] * 80)}
    feats, stats = sft.prepare_features([ROW, long_row, long_row], llama_tok, "causal_lm", Cfg(32), opts)
    assert stats == {"rows": 3, "truncated": 2}
    f = feats[1]
    assert len(f["input_ids"]) <= 32 and f["input_ids"][0] == llama_tok.bos_token_id
    prompt_part = [t for t, lab in zip(f["input_ids"], f["labels"]) if lab == -100]
    text = llama_tok.decode(prompt_part, skip_special_tokens=True)
    assert "Instruction" in text and text.rstrip().endswith("Response:")
    assert llama_tok.decode([t for t in f["labels"] if t != -100], skip_special_tokens=True).strip() == "apple"


def test_long_outputs_keep_half_the_budget(sft, llama_tok):
    opts = sft.parse_options({})
    row = {**ROW, "input": " ".join(["stone"] * 40), "output": " ".join(["cloud"] * 40)}
    feats, stats = sft.prepare_features([row], llama_tok, "causal_lm", Cfg(32), opts)
    labels = feats[0]["labels"]
    assert stats["truncated"] == 1 and len(labels) == 32 and sum(lab != -100 for lab in labels) == 16


def test_seq2seq_truncation_is_counted(sft, t5_tok):
    opts = sft.parse_options({})
    row = {**ROW, "output": " ".join(["cloud"] * 40)}
    feats, stats = sft.prepare_features([row, ROW], t5_tok, "seq2seq", Cfg(16), opts)
    assert stats["truncated"] == 2  # the long prompt of both, the long output of the first
    assert all(len(f["input_ids"]) <= 16 and len(f["labels"]) <= 16 for f in feats)


def test_collator_pads_labels_with_ignore_index(sft, llama_tok):
    collate = sft.data_collator(llama_tok, "causal_lm", None)
    batch = collate([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
                     {"input_ids": [5], "attention_mask": [1], "labels": [5]}])
    pad = llama_tok.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
