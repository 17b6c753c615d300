"""The label-token formulation of classification for causal LMs: verbalizer checks, prompts and
their truncation, and end to end on a tiny Llama against the head formulation, with the
predictions recomputed by hand from the model's label-token log-probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifily_core.api import train
from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows, write_jsonl

from verifily_classification import labeltokens as lt
from verifily_classification.labels import LabelSet
from verifily_classification.options import parse_options

LABELS = LabelSet(["neg", "pos"])
SINGLE = {"pos": " good", "neg": " poor"}  # one token each for the tiny Llama's tokenizer


@pytest.fixture(scope="module")
def tok(verifily_tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifily_tiny_llama_dir)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_verbalizer_tokens_default_to_the_label_names_and_are_checked(tok):
    assert lt.label_token_ids(tok, LABELS, None) == [_ids(tok, " neg"), _ids(tok, " pos")]
    assert lt.label_token_ids(tok, LABELS, SINGLE, single_token_labels=True) == [_ids(tok, " poor"), _ids(tok, " good")]
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.label_tokens\.verbalizer\.neg: ' neg' is 4 tokens "
                                          r"\['Ġ', 'n', 'e', 'g'\] and single_token_labels is true"):
        lt.label_token_ids(tok, LABELS, None, single_token_labels=True)
    with pytest.raises(ConfigError, match=r"label 'neg' \(' good', tokens \['Ġgood'\]\) has the same tokens as label 'pos'"):
        lt.label_token_ids(tok, LABELS, {"pos": " good", "neg": " good"})
    with pytest.raises(ConfigError, match=r"label 'pos' \(' good'.* has a prefix of the tokens of label 'neg' \(' good poor'\)"):
        lt.label_token_ids(tok, LABELS, {"pos": " good", "neg": " good poor"})
    with pytest.raises(ConfigError, match=r"^\$\.task_options\.label_tokens\.verbalizer\.meh: 'meh' is not one of the labels"):
        lt.label_token_ids(tok, LABELS, {"meh": " x"})


@pytest.mark.parametrize("options, message", [
    ({"formulation": "verbalizer"}, "$.task_options.formulation: expected one of head, label_tokens, got 'verbalizer'"),
    ({"formulation": "label_tokens", "label_tokens": {"template": "{txt} ->"}},
     "$.task_options.label_tokens.template: unknown placeholder {txt}"),
    ({"formulation": "label_tokens", "label_tokens": {"template": "no text"}},
     "$.task_options.label_tokens.template: needs {text} once"),
    ({"formulation": "label_tokens", "label_tokens": {"verbalizer": {"pos": ""}}},
     "$.task_options.label_tokens.verbalizer.pos: expected a non-empty text, got ''"),
    ({"formulation": "label_tokens", "pooling": "mean"},
     "$.task_options.formulation: label_tokens scores the model's own LM head; remove pooling/head"),
    ({"label_tokens": {"verbalizer": SINGLE}}, "$.task_options.label_tokens: used with formulation: label_tokens only"),
])
def test_bad_label_token_options_name_the_field(options, message):
    cfg = TrainConfig.from_dict({"task": "classification", "base_model": "org/model", "data_paths": {"train": "t.jsonl"},
                                 "task_options": options})
    assert any(p.startswith(message) for p in cfg.problems(load_registries())), cfg.problems(load_registries())


def test_the_prompt_follows_the_template_and_truncation_cuts_the_intended_side(tok):
    bos = [tok.bos_token_id]
    row = {"text": "good day " * 6, "text_pair": "the review is short " * 3, "label": "pos"}
    text, pair = _ids(tok, row["text"]), _ids(tok, row["text_pair"])
    fixed = bos + _ids(tok, "\n") + _ids(tok, "\nLabel:")
    full = len(fixed) + len(text) + len(pair)
    enc = lt.PromptEncoder(tok, None, "longest_first", full + 2, 2)
    ids, cut = enc.encode(row, "row 1")
    assert not cut and ids == bos + text + _ids(tok, "\n") + pair + _ids(tok, "\nLabel:")
    for strategy, (a, b) in {"only_first": (len(text) - 3, len(pair)), "only_second": (len(text), len(pair) - 3)}.items():
        ids, cut = lt.PromptEncoder(tok, None, strategy, full - 1, 2).encode(row, "row 1")
        assert cut and ids == bos + text[:a] + _ids(tok, "\n") + pair[:b] + _ids(tok, "\nLabel:")
    with pytest.raises(DataError, match=r"^train row 4: with task_options.truncation only_first the text_pair alone"):
        lt.PromptEncoder(tok, None, "only_first", len(fixed) + len(pair) + 2, 2).encode(row, "train row 4")
    with pytest.raises(DataError, match=r"^row 2: the row has a text_pair and task_options.label_tokens.template has no"):
        lt.PromptEncoder(tok, "Review: {text} =", "longest_first", 64, 2).encode(row, "row 2")
    feats, _ = lt.features([row], tok, LABELS, [_ids(tok, " poor"), _ids(tok, " good")], None, "longest_first", 64)
    n = feats[0]["prompt_len"]
    assert feats[0]["input_ids"][n:] == _ids(tok, " good") and feats[0]["labels"][:n] == [-100] * n
    assert feats[0]["labels"][n:] == _ids(tok, " good") and feats[0]["label_id"] == 1


# -- end to end --------------------------------------------------------------------------------

CHANCE = 27 / 48  # the majority share of the test split


@pytest.fixture(scope="module")
def runs(tmp_path_factory, verifily_tiny_llama_dir):
    """Three runs on the same tiny Llama and data: the head and label tokens with one-token
    verbalizers (same steps; each at the learning rate that suits it), and label tokens with the
    default (multi-token) verbalizers, briefly."""
    tmp = tmp_path_factory.mktemp("label-tokens")
    data = {"train": write_jsonl(tmp / "train.jsonl", make_classification_rows(128, seed=1, pair=True)),
            "val": write_jsonl(tmp / "val.jsonl", make_classification_rows(16, seed=2, pair=True)),
            "test": write_jsonl(tmp / "test.jsonl", make_classification_rows(48, seed=3, pair=True))}
    out = {}
    tokens = {"formulation": "label_tokens", "label_tokens": {"verbalizer": SINGLE}}
    for name, options, epochs, lr in (("head", {}, 10, 0.005), ("tokens", tokens, 10, 0.02),
                                      ("multi", {"formulation": "label_tokens"}, 1, 0.02)):
        cfg = {"task": "classification", "base_model": str(verifily_tiny_llama_dir),
               "data_paths": {k: str(v) for k, v in data.items()}, "task_options": options,
               "training": {"num_epochs": epochs, "batch_size": 16, "gradient_accumulation_steps": 1,
                            "learning_rate": lr, "logging_steps": 8, "save_steps": 1000, "eval_steps": 1000,
                            "max_seq_length": 64, "warmup_ratio": 0.0},
               "lora": {"r": 8, "alpha": 16},
               "eval": {"slice_by_tags": ["source"], "bootstrap_resamples": 20, "min_slice_size": 5},
               "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp / name)}}
        out[name] = train(cfg).path
    return out


def _results(run: Path) -> dict:
    return json.loads((run / "eval" / "eval_results.json").read_text())


def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_label_tokens_and_the_head_both_learn_on_the_same_model_and_data(runs):
    for name in ("head", "tokens"):
        metrics = _results(runs[name])["overall"]["metrics"]
        assert metrics["accuracy"]["value"] > CHANCE + 0.1, (name, metrics["accuracy"])
    adapter = json.loads((runs["tokens"] / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and not adapter.get("modules_to_save")
    meta = json.loads((runs["tokens"] / "run_meta.json").read_text())
    assert meta["model"]["auto_class"] == "AutoModelForCausalLM"
    labels = json.loads((runs["tokens"] / "labels.json").read_text())
    assert labels["formulation"] == "label_tokens" and labels["verbalizer"] == {"neg": " poor", "pos": " good"}
    results = _results(runs["tokens"])  # slices, confusion matrix and hard examples as with a head
    assert results["details"]["confusion_matrix"]["labels"] == ["neg", "pos"]
    assert any(name.startswith("source=") for name in results["slices"])
    hard = _predictions(runs["tokens"] / "eval" / "hard_examples.jsonl")
    p_true = [h["scores"]["p_true"] for h in hard]
    assert p_true == sorted(p_true)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tokens", "multi"])
def test_predictions_are_the_argmax_of_label_token_log_probabilities_computed_by_hand(runs, verifily_tiny_llama_dir,
                                                                                    tok, name):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = runs[name]
    verbalizer = json.loads((run / "labels.json").read_text())["verbalizer"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(verifily_tiny_llama_dir), str(run / "adapter"))
    model.eval()
    rows = [json.loads(line) for line in (run.parent.parent / "test.jsonl").read_text().splitlines()]
    preds = _predictions(run / "eval" / "predictions.jsonl")
    assert len(preds) == len(rows) == 48
    for row, pred in zip(rows, preds):
        prompt = ([tok.bos_token_id] + _ids(tok, row["text"]) + _ids(tok, "\n") + _ids(tok, row["text_pair"])
                  + _ids(tok, "\nLabel:"))
        logp = []
        for label in ("neg", "pos"):
            answer = _ids(tok, verbalizer[label])
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
            steps = logits[len(prompt) - 1:len(prompt) - 1 + len(answer)].log_softmax(-1)
            logp.append(float(sum(steps[i, t] for i, t in enumerate(answer))))
        probs = torch.tensor(logp).softmax(-1)
        assert float(probs.sum()) == pytest.approx(1.0)
        best = ["neg", "pos"][int(torch.tensor(logp).argmax())]
        assert pred["prediction"] == best and pred["reference"] == row["label"]
        gold = ["neg", "pos"].index(row["label"])
        assert pred["scores"]["p_true"] == pytest.approx(float(probs[gold]), abs=1e-5)
        assert pred["scores"]["p_pred"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert pred["scores"]["loss"] == pytest.approx(-float(probs[gold].log()), abs=1e-4)


@pytest.mark.slow
def test_a_fresh_process_gives_the_same_label_token_predictions(runs, tmp_path, verifily_subprocess):
    proc = verifily_subprocess("eval", "--run", runs["tokens"], "--output", tmp_path / "fresh", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    before = _predictions(runs["tokens"] / "eval" / "predictions.jsonl")
    after = _predictions(tmp_path / "fresh" / "predictions.jsonl")
    assert [p["prediction"] for p in after] == [p["prediction"] for p in before]
    assert [p["scores"]["p_true"] for p in after] == pytest.approx([p["scores"]["p_true"] for p in before], abs=1e-5)


def test_label_tokens_use_their_own_loader_and_refuse_another():
    regs = load_registries()
    base = {"task": "classification", "base_model": "org/model", "data_paths": {"train": "t.jsonl"},
            "task_options": {"formulation": "label_tokens"}}
    problems = TrainConfig.from_dict({**base, "model": {"loader": "causal_lm"}}).problems(regs)
    assert any(p.startswith("$.task_options.formulation: label_tokens needs model.loader auto or label_token_lm, "
                            "got 'causal_lm'") for p in problems), problems
    assert "label_token_lm" in regs.model_loaders
    assert parse_options(base["task_options"]).uses_label_tokens


def _qlora_problem(bits: str) -> str | None:
    """Why bitsandbytes cannot run quantized layers on this CPU (``None`` when it can)."""
    try:
        from verifily_qlora.loading import check_device

        check_device(bits, "cpu")
    except Exception as exc:  # ImportError, or the plugin's ConfigError naming what is missing
        return str(exc).splitlines()[0]
    return None


@pytest.mark.slow
def test_label_tokens_learn_with_qlora_and_a_fresh_process_agrees(tmp_path, verifily_tiny_llama_dir,
                                                                    verifily_subprocess):
    """4-bit backbone, LoRA on it, the LM head scoring the label tokens; evaluation rebuilds the
    quantized model from the run directory."""
    problem = _qlora_problem("4bit")
    if problem:
        pytest.skip(f"bitsandbytes cannot run 4-bit layers on this CPU: {problem}")
    data = {"train": write_jsonl(tmp_path / "train.jsonl", make_classification_rows(128, seed=1, pair=True)),
            "test": write_jsonl(tmp_path / "test.jsonl", make_classification_rows(48, seed=3, pair=True))}
    cfg = {"task": "classification", "base_model": str(verifily_tiny_llama_dir),
           "data_paths": {k: str(v) for k, v in data.items()},
           "task_options": {"formulation": "label_tokens", "label_tokens": {"verbalizer": SINGLE}},
           "training": {"num_epochs": 10, "batch_size": 16, "gradient_accumulation_steps": 1, "learning_rate": 0.02,
                        "logging_steps": 8, "save_steps": 1000, "max_seq_length": 64, "warmup_ratio": 0.0},
           "lora": {"r": 8, "alpha": 16, "quantization": "4bit"},
           "eval": {"bootstrap_resamples": 0}, "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    run = train(cfg).path
    losses = [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["model"]["auto_class"] == "AutoModelForCausalLM"
    assert _results(run)["overall"]["metrics"]["accuracy"]["value"] > CHANCE + 0.1
    proc = verifily_subprocess("eval", "--run", run, "--output", tmp_path / "fresh", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    before = _predictions(run / "eval" / "predictions.jsonl")
    after = _predictions(tmp_path / "fresh" / "predictions.jsonl")
    assert [p["prediction"] for p in after] == [p["prediction"] for p in before]
