"""SFT on conversations (`messages` rows): the chat template renders them, the loss covers the
assistant's tokens only (every assistant turn or the last one), rows are checked with their
file and line, and a trained run evaluates, compares and generates on conversations."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_chat_rows, train_run, write_jsonl

CHAT = {"messages": [
    {"role": "system", "content": "You answer with one word."},
    {"role": "user", "content": "The word is river."},
    {"role": "assistant", "content": "river"},
    {"role": "user", "content": "Write the word in uppercase."},
    {"role": "assistant", "content": "RIVER"},
], "tags": {"source": "human"}}


class Cfg:
    def __init__(self, max_len: int) -> None:
        self.training = type("T", (), {"max_seq_length": max_len})()


@pytest.fixture(scope="module")
def sft():
    return load_registries().tasks.get("sft")


@pytest.fixture()
def llama_tok(verifily_tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)


def _learned_spans(feat, tok) -> list[str]:
    """The decoded runs of consecutive labelled tokens, checking each label is its input token."""
    spans, current = [], []
    for token, label in zip(feat["input_ids"], feat["labels"]):
        if label == -100:
            if current:
                spans.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        spans.append(current)
    return [tok.decode(s) for s in spans]


@pytest.mark.parametrize("turns, expected", [("all", ["river</s>\n", "RIVER</s>\n"]), ("last", ["RIVER</s>\n"])])
def test_the_loss_covers_the_assistant_tokens_only(sft, llama_tok, turns, expected):
    opts = sft.parse_options({"assistant_turns": turns})
    feats, stats = sft.prepare_features([CHAT], llama_tok, "causal_lm", Cfg(256), opts)
    f = feats[0]
    whole = llama_tok.apply_chat_template(CHAT["messages"], tokenize=False)
    assert llama_tok.decode(f["input_ids"]) == whole  # the template's text, token for token
    assert f["input_ids"].count(llama_tok.bos_token_id) == 1
    assert _learned_spans(f, llama_tok) == expected
    for token, label in zip(f["input_ids"], f["labels"]):  # system and user tokens are never learned
        if label != -100:
            assert token not in llama_tok("<|user|>\n<|system|>\n", add_special_tokens=False)["input_ids"][:3]
    assert stats == {"rows": 1, "truncated": 0}


def test_a_tokenizer_without_template_gets_the_documented_fallback(sft, llama_tok):
    from verifily_sft.chat import FALLBACK_TEMPLATE

    llama_tok.chat_template = None
    opts = sft.parse_options({})
    feats, _ = sft.prepare_features([CHAT], llama_tok, "causal_lm", Cfg(256), opts)
    text = llama_tok.decode(feats[0]["input_ids"])
    assert text == ("<s>### System:\nYou answer with one word.\n\n### User:\nThe word is river.\n\n"
                    "### Assistant:\nriver</s>\n\n### User:\nWrite the word in uppercase.\n\n### Assistant:\nRIVER</s>\n\n")
    assert _learned_spans(feats[0], llama_tok) == ["river</s>\n\n", "RIVER</s>\n\n"]
    assert llama_tok.chat_template == FALLBACK_TEMPLATE  # the run's saved tokenizer renders as training did


def test_a_template_that_rewrites_earlier_turns_is_refused(sft, llama_tok):
    rewriting = ("{% for m in messages %}{% if loop.last or m['role'] != 'assistant' %}{{ m['content'] }}"
                 "{% else %}[earlier]{% endif %}\n{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    opts = sft.parse_options({"chat_template": rewriting})
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.chat_template: .*cannot be told apart"):
        sft.prepare_features([CHAT], llama_tok, "causal_lm", Cfg(256), opts)


def test_truncation_keeps_the_last_answer_and_cuts_labels_with_their_tokens(sft, llama_tok):
    long = {"messages": [{"role": "user", "content": " ".join(["stone"] * 60)},
                         {"role": "assistant", "content": "stone"},
                         {"role": "user", "content": "Repeat the word."}, {"role": "assistant", "content": "apple"}]}
    feats, stats = sft.prepare_features([long], llama_tok, "causal_lm", Cfg(32), sft.parse_options({}))
    f = feats[0]
    assert stats["truncated"] == 1 and len(f["input_ids"]) == len(f["labels"]) <= 32
    assert _learned_spans(f, llama_tok)[-1] == "apple</s>\n"


def test_seq2seq_conversations_have_the_last_answer_as_target(sft, verifily_tiny_t5_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(verifily_tiny_t5_dir)
    feats, _ = sft.prepare_features([CHAT], tok, "seq2seq", Cfg(256), sft.parse_options({}))
    assert feats[0]["labels"] == tok("RIVER")["input_ids"]
    source = tok.decode(feats[0]["input_ids"], skip_special_tokens=True)
    assert source.endswith("### User:\nWrite the word in uppercase.\n\n### Assistant:\n") and "river" in source


@pytest.mark.parametrize("row, words", [
    ({"messages": []}, "field 'messages' is an empty conversation"),
    ({"messages": "hi"}, "must be a list of messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "has no assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                   {"role": "user", "content": "and?"}]}, "must end with an assistant message"),
    ({"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "message 0 has the unknown role 'human' (roles: system, user, assistant)"),
    ({"messages": [{"from": "human", "value": "hi"}]}, "uses the keys 'from'/'value'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"},
                   {"role": "assistant", "content": "yo"}]}, "a system message may only come first"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
     "the last assistant message is empty"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "yo"}]}, "needs a string 'content'"),
    ({**CHAT, "output": "x"}, "unknown field 'output' beside 'messages'"),
])
def test_bad_conversations_are_named(sft, row, words):
    assert words in sft.validate_row(row)


def _run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def test_bad_rows_and_mixed_forms_name_file_and_line(tmp_path):
    bad = make_chat_rows(4)
    bad[2]["messages"][-1]["role"] = "bot"
    write_jsonl(tmp_path / "bad.jsonl", bad)
    res = _run_cli("dataset", "create", "--id", "c", "--version", "v1", "--task", "sft",
                   "--train", str(tmp_path / "bad.jsonl"), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2 and "bad.jsonl:3" in res.output and "unknown role 'bot'" in res.output

    from verifily_core.testing import make_sft_rows

    write_jsonl(tmp_path / "train.jsonl", make_chat_rows(4))
    write_jsonl(tmp_path / "test.jsonl", make_sft_rows(3))
    cfg = {"task": "sft", "base_model": "unused", "data_paths": {"train": str(tmp_path / "train.jsonl"),
                                                                  "test": str(tmp_path / "test.jsonl")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = _run_cli("train", "--config", str(tmp_path / "c.yaml"), "--dry-run")
    assert res.exit_code == 2, res.output
    assert "mixes instruction rows" in res.output and "test.jsonl:1" in res.output and "train.jsonl:1" in res.output

    cfg["data_paths"] = {"train": str(tmp_path / "train.jsonl")}
    cfg["task_options"] = {"prompt_template": "{instruction}"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = _run_cli("train", "--config", str(tmp_path / "c.yaml"), "--dry-run")
    assert res.exit_code == 1 and "$.task_options.prompt_template" in res.output and "chat_template" in res.output


def test_leakage_and_diffs_compare_the_conversation_before_the_answer(sft):
    from verifily_core.datasets.rows import input_key

    changed = json.loads(json.dumps(CHAT))
    changed["messages"][-1]["content"] = "Stone"
    respaced = json.loads(json.dumps(CHAT))
    respaced["messages"][1]["content"] = "the  word is RIVER. "
    key = input_key(sft.row_input(CHAT))
    assert key == input_key(sft.row_input(changed)) == input_key(sft.row_input(respaced))
    other = json.loads(json.dumps(CHAT))
    other["messages"][3]["content"] = "Repeat the word."
    assert input_key(sft.row_input(other)) != key


@pytest.mark.slow
def test_a_conversation_run_trains_evaluates_compares_and_generates(tmp_path, verifily_tiny_llama_dir):
    write_jsonl(tmp_path / "train.jsonl", make_chat_rows(48, seed=1))
    write_jsonl(tmp_path / "bad.jsonl", make_chat_rows(48, seed=1, corrupt_source="ai_contaminated"))
    write_jsonl(tmp_path / "test.jsonl", make_chat_rows(12, seed=3))
    runs = []
    for name, train in (("clean", "train.jsonl"), ("bad", "bad.jsonl")):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "data_checks": {"leakage": "off"},
               "data_paths": {"train": str(tmp_path / train), "test": str(tmp_path / "test.jsonl")},
               "training": {"max_steps": 20, "batch_size": 8, "max_seq_length": 96, "learning_rate": 0.02},
               "lora": {"r": 8, "alpha": 16}, "eval": {"max_new_tokens": 6, "slice_by_tags": ["source"]},
               "output": {"dir": str(tmp_path / "runs")}}
        runs.append(train_run(cfg, tmp_path, name))
    clean = runs[0]
    log = [json.loads(line) for line in (clean / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < losses[0]
    assert json.loads((clean / "chat.json").read_text()) == {"form": "messages", "system": "You answer with one word."}

    results = json.loads((clean / "eval" / "eval_results.json").read_text())
    preds = [json.loads(line) for line in (clean / "eval" / "predictions.jsonl").read_text().splitlines()]
    test_rows = make_chat_rows(12, seed=3)
    assert [p["reference"] for p in preds] == [r["messages"][-1]["content"] for r in test_rows]
    hand = sum(p["prediction"].strip().lower() == p["reference"].lower() for p in preds) / len(preds)
    assert results["overall"]["metrics"]["exact_match"]["value"] == pytest.approx(hand)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(clean / "tokenizer")  # only the last answer is scored
    assert [p["scores"]["n_tokens"] for p in preds] == \
        [len(tok(p["reference"] + "</s>\n", add_special_tokens=False)["input_ids"]) for p in preds]

    res = _run_cli("compare", "--runs", f"{clean},{runs[1]}", "--slice-by", "source", "--format", "json")
    assert res.exit_code == 0, res.output
    assert "ai_contaminated" in res.output

    # generate: the test conversations without their answers, and a typed prompt, as a conversation
    asked = [{"messages": r["messages"][:-1]} for r in test_rows]
    write_jsonl(tmp_path / "ask.jsonl", asked)
    res = _run_cli("generate", "--run", str(clean), "--input", str(tmp_path / "ask.jsonl"), "--format", "json")
    assert res.exit_code == 0, res.output
    assert [g["prediction"] for g in json.loads(res.output)] == [p["prediction"] for p in preds]

    from verifily_core.api import predictor

    model = predictor(clean)
    row = model.text_row(f"{test_rows[0]['messages'][1]['content']}")
    assert row == {"messages": [{"role": "system", "content": "You answer with one word."},
                                {"role": "user", "content": test_rows[0]["messages"][1]["content"]}]}
    assert model([row])[0]["prediction"] == preds[0]["prediction"]
    res = _run_cli("generate", "--run", str(clean), "--prompt", test_rows[0]["messages"][1]["content"])
    assert res.exit_code == 0 and res.output.strip() == preds[0]["prediction"]


class _FakeChatModel:
    """What `verifily generate` sees of a run trained on conversations: rows it was asked for."""

    def __init__(self):
        self.asked = []

    def text_row(self, text, context=None):
        return {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": text}]}

    def __call__(self, rows):
        self.asked.append(rows[0]["messages"])
        return [{"prediction": f"reply {len(self.asked)}", "scores": {}}]


def test_a_chat_on_a_terminal_keeps_its_turns_until_reset(monkeypatch):
    import builtins
    from types import SimpleNamespace

    import verifily_core.api
    import verifily_core.commands.predict

    fake = _FakeChatModel()
    monkeypatch.setattr(verifily_core.api, "predictor", lambda *a, **k: fake)
    terminal = SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True))  # the runner's stdin is a pipe
    monkeypatch.setattr(verifily_core.commands.predict, "sys", terminal)
    lines = iter(["hello", "and then?", "/reset", "again", ""])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    res = _run_cli("generate", "--run", "unused", "--no-verify")
    assert res.exit_code == 0, res.output
    assert res.output.split() == ["reply", "1", "reply", "2", "reply", "3"]
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    system, reply = {"role": "system", "content": "S"}, lambda n: {"role": "assistant", "content": f"reply {n}"}  # noqa: E731
    assert fake.asked == [[system, user("hello")],
                          [system, user("hello"), reply(1), user("and then?")],
                          [system, user("again")]]
