"""The tiny offline models load through the real Auto classes, are deterministic and learn;
the shared data generators and command-line runners behave as documented."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from verifily_core import __version__
from verifily_core.testing import make_classification_rows, make_sft_rows
from verifily_core.testing.data import NEGATIVE, POSITIVE, WORDS
from verifily_core.testing.tiny_models import KINDS, build_tiny_model, main


@pytest.mark.parametrize("fixture, auto", [
    ("verifily_tiny_llama_dir", "AutoModelForCausalLM"),
    ("verifily_tiny_t5_dir", "AutoModelForSeq2SeqLM"),
    ("verifily_tiny_bert_dir", "AutoModelForSequenceClassification"),
    ("verifily_tiny_deberta_dir", "AutoModelForSequenceClassification"),
    ("verifily_tiny_llama_dir", "AutoModelForSequenceClassification"),
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
        assert out.logits.shape == (2, 2)
    elif auto == "AutoModelForSeq2SeqLM":
        out = model(**enc, labels=tok(["apple", "day"], return_tensors="pt", padding=True).input_ids)
    else:
        out = model(**enc, labels=enc.input_ids)
    assert torch.isfinite(out.loss)
    assert model.config.vocab_size == len(tok)


@pytest.mark.parametrize("fixture", ["verifily_tiny_bert_dir", "verifily_tiny_deberta_dir"])
def test_pair_encoding_has_two_segments(request, fixture):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    enc = tok("good movie", "the review is short")
    assert enc["input_ids"][0] == tok.cls_token_id
    assert enc["input_ids"].count(tok.sep_token_id) == 2
    first_sep = enc["input_ids"].index(tok.sep_token_id)
    assert set(enc["token_type_ids"][: first_sep + 1]) == {0}
    assert set(enc["token_type_ids"][first_sep + 1:]) == {1}
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "good movie the review is short"


def test_special_tokens_follow_each_architecture(verifily_tiny_llama_dir, verifily_tiny_t5_dir):
    from transformers import AutoConfig, AutoTokenizer

    llama = AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)
    assert (llama.bos_token, llama.eos_token, llama.pad_token, llama.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert len({llama.bos_token_id, llama.eos_token_id, llama.pad_token_id}) == 3
    assert llama("apple").input_ids[0] == llama.bos_token_id
    cfg = AutoConfig.from_pretrained(verifily_tiny_llama_dir)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        llama.bos_token_id, llama.eos_token_id, llama.pad_token_id)

    t5 = AutoTokenizer.from_pretrained(verifily_tiny_t5_dir)
    assert t5.pad_token_id == 0 and t5.eos_token == "</s>"
    assert t5("apple").input_ids[-1] == t5.eos_token_id
    assert AutoConfig.from_pretrained(verifily_tiny_t5_dir).decoder_start_token_id == 0


@pytest.mark.parametrize("fixture", ["verifily_tiny_llama_dir", "verifily_tiny_t5_dir"])
def test_byte_level_tokenizers_round_trip(request, fixture):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    text = 'Write the word in uppercase.\nocean -> OCEAN {"value": 42, "ok": [1, 2]} unseen Zyx!'
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in tok(text).input_ids


def test_llama_chat_template(verifily_tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)
    chat = [{"role": "user", "content": "Repeat the word. apple"}, {"role": "assistant", "content": "apple"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == "<s><|user|>\nRepeat the word. apple\n<|assistant|>\napple</s>\n"
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<s>") and prompt.endswith("<|assistant|>\n")
    ids = tok(prompt, add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_building_twice_is_byte_identical(tmp_path, kind):
    a = build_tiny_model(kind, tmp_path / "a")
    b = build_tiny_model(kind, tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert hashlib.sha256((a / name).read_bytes()).digest() == hashlib.sha256((b / name).read_bytes()).digest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directory left behind"


def test_seed_and_pretraining_change_the_weights_deterministically(tmp_path):
    def digest(path):
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    base = digest(build_tiny_model("llama", tmp_path / "s0"))
    assert digest(build_tiny_model("llama", tmp_path / "s1", seed=1)) != base
    pre = [digest(build_tiny_model("llama", tmp_path / f"p{i}", pretrain_steps=3)) for i in range(2)]
    assert pre[0] == pre[1] != base


def test_fresh_tiny_llama_learns_the_sft_task(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model("llama", tmp_path / "fresh")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
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
    assert losses[-1] < 0.5 * losses[0]


def test_generators_cover_tags_and_are_learnable_by_rule():
    rows = make_sft_rows(60, seed=3)
    assert rows == make_sft_rows(60, seed=3) and rows != make_sft_rows(60, seed=4)
    assert {r["tags"]["source"] for r in rows} == {"human", "synthetic", "ai_contaminated"}
    assert {r["tags"]["difficulty"] for r in rows} == {"easy", "medium", "hard"}
    for r in rows:
        assert r["output"] == (r["input"].upper() if "uppercase" in r["instruction"] else r["input"])
    for r in make_classification_rows(60, seed=3, pair=True):
        words = set(r["text"].split())
        assert r["label"] == ("pos" if words & set(POSITIVE) else "neg")
        assert not (words & set(POSITIVE) and words & set(NEGATIVE))
        assert r["text_pair"]


def test_corruption_changes_only_the_chosen_source():
    clean = make_sft_rows(60, seed=3)
    bad = make_sft_rows(60, seed=3, corrupt_source="ai_contaminated")
    changed = [(r, s) for r, s in zip(clean, bad) if r != s]
    assert {r["tags"]["source"] for r, _ in changed} == {"ai_contaminated"}
    assert len(changed) == sum(r["tags"]["source"] == "ai_contaminated" for r in clean)
    assert all(s["output"] in WORDS and s["output"] != r["output"] for r, s in changed)
    flipped = make_classification_rows(60, seed=3, flip_source="human")
    same = make_classification_rows(60, seed=3)
    diff = [r for r, s in zip(flipped, same) if r["label"] != s["label"]]
    assert {r["tags"]["source"] for r in diff} == {"human"}
    assert len(diff) == sum(r["tags"]["source"] == "human" for r in same)


def test_command_line_builds_and_prints_paths(tmp_path, capsys):
    main(["--out", str(tmp_path / "models"), "--kind", "bert,deberta"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "models" / "tiny-bert"), str(tmp_path / "models" / "tiny-deberta-v2")]
    assert all((tmp_path / "models" / d / "model.safetensors").is_file() for d in ("tiny-bert", "tiny-deberta-v2"))
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--kind", "gpt2"])
    assert exc.value.code == 2 and "unknown tiny model kind 'gpt2'" in capsys.readouterr().err


def test_testing_helpers_import_no_heavy_library():
    probe = ("import sys, verifily_core.testing, verifily_core.testing.tiny_models\n"
             "print(','.join(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def test_cli_runners_separate_stdout_and_stderr(verifily_cli, verifily_subprocess, tmp_path):
    ok = verifily_cli("--version")
    assert ok.exit_code == 0 and __version__ in ok.stdout and ok.stderr == ""
    bad = verifily_cli("no-such-command")
    assert bad.exit_code == 1 and "no-such-command" in bad.stderr and bad.stdout == ""
    proc = verifily_subprocess("--version", cwd=tmp_path)
    assert proc.returncode == 0 and __version__ in proc.stdout
    proc = verifily_subprocess("no-such-command", cwd=tmp_path)
    assert proc.returncode == 1 and "no-such-command" in proc.stderr


def test_write_jsonl_round_trips_and_leaves_no_temporary_file(tmp_path):
    import json

    from verifily_core.testing import write_jsonl

    rows = make_sft_rows(5, seed=0) + [{"text": "naïve \"quoted\"\nline", "label": "pos", "tags": {}}]
    path = write_jsonl(tmp_path / "sub" / "rows.jsonl", rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]
