"""The classification task's parts without training: options, label sets, tokenization of pairs,
heads and pooling, class-weighted loss, validation metrics, loader choice."""

from __future__ import annotations

import json

import pytest

from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError, DataError
from verifily_core.plugins import load_registries
from verifily_core.testing import make_classification_rows

from verifily_classification.labels import LabelSet, read_labels, resolve_labels, sort_labels, write_labels
from verifily_classification.options import parse_options
from verifily_classification.weights import class_weights


def _config(**extra):
    base = {"task": "classification", "base_model": "org/model", "data_paths": {"train": "t.jsonl"}}
    return TrainConfig.from_dict({**base, **extra})


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"head": {"activation": "swish"}}, "$.task_options.head.activation: expected one of relu, gelu, tanh, got 'swish'"),
    ({"pooling": "avg"}, "$.task_options.pooling: expected one of auto, cls, mean, max, last, got 'avg'"),
    ({"head": {"num_layers": 4, "hidden_dims": [8, 8, 8, 8]}}, "$.task_options.head.num_layers: expected 0 to 3, got 4"),
    ({"head": {"num_layers": 2, "hidden_dims": [8]}},
     "$.task_options.head.hidden_dims: expected 2 width(s), one per hidden layer, got [8]"),
    ({"head": {"num_layers": 1, "hidden_dims": ["wide"]}}, "$.task_options.head.hidden_dims[0]: expected int"),
    ({"head": {"dropout": 0.7}}, "$.task_options.head.dropout: expected 0.0 to 0.5, got 0.7"),
    ({"head": {"dropot": 0.1}}, "$.task_options.head.dropot: unknown key (did you mean 'dropout'?)"),
    ({"class_weights": "balanced"}, "$.task_options.class_weights: expected none, auto or a mapping label -> weight"),
    ({"class_weights": {"pos": -1}}, "$.task_options.class_weights.pos: expected a number >= 0, got -1"),
    ({"labels": ["pos"]}, "$.task_options.labels: a classifier needs at least 2 labels"),
    ({"labels": ["pos", "neg", "pos"]}, "$.task_options.labels[2]: label 'pos' is listed twice"),
    ({"temperature": 2}, "$.task_options.temperature: unknown key"),
])
def test_bad_options_name_the_field(options, message):
    with pytest.raises(ConfigError) as err:
        parse_options(options)
    assert str(err.value).startswith(message), str(err.value)
    assert any(p.startswith(message) for p in _config(task_options=options).problems(load_registries()))


def test_default_options_keep_the_models_own_head():
    opts = parse_options({})
    assert (opts.pooling, opts.head, opts.class_weights, opts.labels) == ("auto", None, "none", None)
    assert not opts.custom_head and opts.head_spec() == {}
    spec = parse_options({"pooling": "mean", "head": {"num_layers": 1, "hidden_dims": [16], "activation": "gelu"}}).head_spec()
    assert spec == {"pooling": "mean", "num_layers": 1, "hidden_dims": [16], "activation": "gelu", "dropout": 0.1}


def test_a_custom_head_needs_lora_and_the_classification_loader():
    regs = load_registries()
    head = {"head": {"num_layers": 1, "hidden_dims": [8]}}
    full = _config(task_options=head, lora={"enabled": False}).problems(regs)
    assert any("$.task_options.head: a custom pooling/head needs lora.enabled: true" in p for p in full)
    other = _config(task_options={"pooling": "mean"}, model={"loader": "causal_lm"}).problems(regs)
    assert any("needs model.loader auto or sequence_classification, got 'causal_lm'" in p for p in other)
    assert _config(task_options=head).problems(regs) == []


def test_labels_may_be_strings_or_integers_but_not_booleans():
    task = load_registries().tasks.get("classification")
    assert task.validate_row({"text": "a", "label": 3}) is None
    assert task.validate_row({"text": "a", "label": "pos", "text_pair": "b"}) is None
    assert task.validate_row({"text": "a", "label": True}) == "field 'label' must be a string or an integer"
    assert task.validate_row({"text": "a", "label": 0.5}) == "field 'label' must be a string or an integer"
    assert task.validate_row({"text": "a", "label": " "}) == "field 'label' must be a non-empty string"


# -- label sets ------------------------------------------------------------------------------


def test_label_order_is_numbers_then_strings_and_one_spelling_per_label():
    assert sort_labels(["pos", 10, "neg", 2, "2", "-1"]) == ["-1", 2, 10, "neg", "pos"]
    labels = resolve_labels(None, [{"label": "pos"}, {"label": "neg"}, {"label": "pos"}])
    assert labels.labels == ["neg", "pos"]
    assert labels.model_kwargs() == {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1},
                                     "ignore_mismatched_sizes": True}
    assert LabelSet([0, 1]).index("1", "row 1") == 1  # compared as strings, like the metrics


def test_explicit_labels_fix_the_order_and_reject_other_training_labels():
    assert resolve_labels(["pos", "neg", "neutral"], [{"label": "neg"}]).labels == ["pos", "neg", "neutral"]
    with pytest.raises(DataError, match=r"^train row 2: label 'meh' is not one of the run's labels \(pos, neg\)"):
        resolve_labels(["pos", "neg"], [{"label": "neg"}, {"label": "meh"}])
    with pytest.raises(DataError, match="the training split has 1 distinct label"):
        resolve_labels(None, [{"label": "neg"}, {"label": "neg"}])


def test_labels_json_round_trip_keeps_integer_labels(tmp_path):
    path = write_labels(tmp_path, LabelSet([0, 1, 2]), {"pooling": "mean"})
    doc = json.loads(path.read_text())
    assert doc["labels"] == [0, 1, 2] and doc["id2label"] == {"0": "0", "1": "1", "2": "2"}
    assert doc["label2id"] == {"0": 0, "1": 1, "2": 2} and doc["head"] == {"pooling": "mean"}
    assert read_labels(tmp_path).labels == [0, 1, 2]
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(DataError, match="cannot read the run's label set"):
        read_labels(tmp_path / "missing")


# -- class weights ---------------------------------------------------------------------------


def test_auto_class_weights_are_n_over_k_times_count():
    rows = [{"label": "neg"}] * 3 + [{"label": "pos"}]
    labels = LabelSet(["neg", "pos", "neutral"])
    assert class_weights("auto", rows, labels) == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 1.0])
    assert class_weights({"pos": 2.5}, rows, labels) == [1.0, 2.5, 1.0]
    assert class_weights("none", rows, labels) is None
    with pytest.raises(ConfigError, match=r"\$\.task_options\.class_weights\.meh: 'meh' is not one of the labels"):
        class_weights({"meh": 2.0}, rows, labels)


def test_class_weights_change_the_trainers_loss_as_computed_by_hand(tmp_path, verifily_tiny_bert_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from verifily_classification.data import collator, features
    from verifily_classification.trainer import trainer_class

    tok = AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(verifily_tiny_bert_dir, num_labels=2).eval()
    rows = make_classification_rows(6, seed=4)
    batch = collator(tok)(features(rows, tok, LabelSet(["neg", "pos"]), 32)[0])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        nll = -torch.log_softmax(logits, dim=-1)[torch.arange(len(rows)), batch["labels"]]
        w = torch.tensor([1.0, 3.0])[batch["labels"]]
        weighted = trainer_class([1.0, 3.0])(model=model, args=args).compute_loss(model, dict(batch))
        plain = trainer_class(None)(model=model, args=args).compute_loss(model, dict(batch))
    assert float(weighted) == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-5)
    assert float(plain) == pytest.approx(float(nll.mean()), rel=1e-5)
    assert batch["labels"].tolist().count(1) not in (0, len(rows))  # both classes: the weights matter
    assert abs(float(weighted) - float(plain)) > 1e-4


# -- tokenization ----------------------------------------------------------------------------


def test_text_pair_reaches_the_tokenizer_as_a_pair(verifily_tiny_bert_dir):
    from transformers import AutoTokenizer

    from verifily_classification.data import features

    tok = AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)
    rows = make_classification_rows(3, seed=1, pair=True) + make_classification_rows(1, seed=2)
    feats, truncated = features(rows, tok, LabelSet(["neg", "pos"]), 64)
    assert truncated == 0
    for row, f in zip(rows[:3], feats):
        assert f["input_ids"] == tok(row["text"], row["text_pair"])["input_ids"]
        assert f["input_ids"].count(tok.sep_token_id) == 2  # [CLS] text [SEP] pair [SEP]
        second = f["input_ids"].index(tok.sep_token_id) + 1
        assert set(f["token_type_ids"][:second]) == {0} and set(f["token_type_ids"][second:]) == {1}
        assert f["labels"] == (1 if row["label"] == "pos" else 0)
    assert feats[3]["input_ids"].count(tok.sep_token_id) == 1 and set(feats[3]["token_type_ids"]) == {0}


def test_long_rows_are_truncated_and_counted_and_unknown_labels_name_the_row(verifily_tiny_bert_dir):
    from transformers import AutoTokenizer

    from verifily_classification.data import features

    tok = AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)
    rows = [{"text": "good " * 40, "text_pair": "the review is long", "label": "pos"}, {"text": "bad", "label": "neg"}]
    feats, truncated = features(rows, tok, LabelSet(["neg", "pos"]), 16)
    assert truncated == 1 and len(feats[0]["input_ids"]) == 16 and feats[0]["input_ids"][-1] == tok.sep_token_id
    with pytest.raises(DataError, match=r"^test row 2: label 'neutral' is not one of the run's labels \(neg, pos\)"):
        features([rows[0], {"text": "meh", "label": "neutral"}], tok, LabelSet(["neg", "pos"]), 16, split="test")


# -- heads -----------------------------------------------------------------------------------


def test_pooling_by_hand_with_right_and_left_padding():
    import torch

    from verifily_classification.head import pool

    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [9.0, 9.0]],
                           [[9.0, 9.0], [2.0, -2.0], [4.0, 6.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # right-padded, left-padded
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 0.0], [9.0, 9.0]]
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0], [3.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0], [4.0, 6.0]]
    assert pool(hidden, mask, "last").tolist() == [[3.0, 4.0], [4.0, 6.0]]


def _tiny(kind: str, num_labels: int = 3):
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, DebertaV2Config, LlamaConfig

    common = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  num_labels=num_labels, pad_token_id=0)
    config = {"bert": lambda: BertConfig(**common), "deberta": lambda: DebertaV2Config(**common),
              "llama": lambda: LlamaConfig(**common, num_key_value_heads=2)}[kind]()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("kind, own", [("bert", ["classifier"]), ("deberta", ["pooler", "classifier"]), ("llama", ["score"])])
def test_lora_saves_the_head_and_a_task_pooler(kind, own):
    from verifily_classification.head import head_modules, install_head

    model = _tiny(kind)
    assert head_modules(model) == own
    install_head(model, parse_options({"pooling": "mean"}).head_spec())
    assert head_modules(model) == [own[-1]]  # the pooled head replaces the task pooler


def test_a_zero_layer_head_is_dropout_and_one_linear_layer_on_the_pooled_state():
    import torch

    from verifily_classification.head import PooledHead, install_head

    model = _tiny("bert")
    own_class = type(model)
    install_head(model, parse_options({"pooling": "cls", "head": {"num_layers": 0}}).head_spec())
    head = model.classifier
    assert isinstance(head, PooledHead) and isinstance(model, own_class)
    assert [type(m).__name__ for m in head.mlp] == ["Dropout", "Linear"] and head.mlp[1].out_features == 3
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
        states = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = head.mlp[1](states[:, 0])
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert float(out.loss) == pytest.approx(float(torch.nn.functional.cross_entropy(expected, torch.tensor([0, 2]))))


def test_an_mlp_head_has_the_configured_layers_and_pools_the_last_token_of_decoders():
    import torch

    from verifily_classification.head import install_head

    model = _tiny("llama", num_labels=2)
    install_head(model, parse_options({"head": {"num_layers": 2, "hidden_dims": [8, 4], "activation": "tanh",
                                                "dropout": 0.0}}).head_spec())
    head = model.score
    assert head.pooling == "last"
    assert [type(m).__name__ for m in head.mlp] == ["Dropout", "Linear", "Tanh", "Dropout", "Linear", "Tanh",
                                                    "Dropout", "Linear"]
    assert [m.out_features for m in head.mlp if isinstance(m, torch.nn.Linear)] == [8, 4, 2]
    ids = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        states = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(logits, head.mlp(states[torch.arange(2), torch.tensor([2, 1])]), atol=1e-6)


# -- validation metrics and loader choice ----------------------------------------------------


def test_metric_for_best_model_uses_a_scalar_classification_metric():
    from verifily_classification.validation import best_model_metrics

    regs = load_registries()
    metrics, higher = best_model_metrics("eval_macro_f1", regs)
    assert list(metrics) == ["macro_f1"] and higher is True
    assert best_model_metrics(None, regs) == ({}, None) and best_model_metrics("loss", regs) == ({}, None)
    for bad in ("per_class", "token_f1", "f2"):
        with pytest.raises(ConfigError, match=rf"\$\.training\.metric_for_best_model: '{bad}' is not a scalar "
                                              r"classification metric; use loss or one of .*accuracy.*macro_f1"):
            best_model_metrics(bad, regs)


def test_validation_metrics_score_argmax_predictions():
    import numpy as np
    from transformers import EvalPrediction

    from verifily_classification.trainer import metrics_function
    from verifily_classification.validation import best_model_metrics

    regs = load_registries()
    metrics = {**best_model_metrics("accuracy", regs)[0], **best_model_metrics("macro_f1", regs)[0]}
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 0.0]])
    out = metrics_function(LabelSet(["neg", "pos"]), metrics)(EvalPrediction(logits, np.array([0, 1, 1, 1])))
    # predicted neg, pos, neg, neg; F1(neg) = 2*1/(2*1+2) = 0.5, F1(pos) = 2*1/(2*1+2) = 0.5
    assert out == {"accuracy": pytest.approx(0.5), "macro_f1": pytest.approx(0.5)}


def test_the_classification_task_chooses_the_sequence_classification_loader():
    from transformers import BertConfig, LlamaConfig, T5Config

    regs = load_registries()
    choose = regs.hook.verifily_select_model_loader
    assert choose(task="classification", model_config=BertConfig(), config=None) == "sequence_classification"
    assert choose(task="classification", model_config=LlamaConfig(), config=None) == "sequence_classification"
    assert choose(task="classification", model_config=T5Config(), config=None) == "seq2seq"
    assert choose(task="sft", model_config=LlamaConfig(), config=None) == "causal_lm"


# -- prediction and loading ------------------------------------------------------------------


def test_predictions_carry_probabilities_and_keep_integer_labels(verifily_tiny_bert_dir):
    import math

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from verifily_classification.predict import predict

    tok = AutoTokenizer.from_pretrained(verifily_tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(verifily_tiny_bert_dir, num_labels=2)
    rows = [{**row, "label": int(row["label"] == "pos")} for row in make_classification_rows(5, seed=7, pair=True)]
    out = predict(model, tok, rows, LabelSet([0, 1]), 32, batch_size=2, device="cpu")
    assert [r["reference"] for r in out] == [row["label"] for row in rows]
    for rec in out:
        s = rec["scores"]
        assert rec["prediction"] in (0, 1) and s["p_pred"] >= 0.5 >= min(s["p_pred"], 1 - s["p_pred"])
        assert s["p_true"] == pytest.approx(s["p_pred"] if rec["prediction"] == rec["reference"] else 1 - s["p_pred"])
        assert s["loss"] == pytest.approx(-math.log(s["p_true"]))
    with pytest.raises(DataError, match=r"^test row 2: label 7 is not one of the run's labels \(0, 1\)"):
        predict(model, tok, [rows[0], {**rows[1], "label": 7}], LabelSet([0, 1]), 32, batch_size=2, device="cpu")


def test_the_loader_installs_the_configured_head_and_re_heads_a_classifier_with_other_labels(verifily_tiny_deberta_dir):
    from verifily_core.modeling import ModelSource

    from verifily_classification.head import PooledHead

    regs = load_registries()
    loader = regs.model_loaders.get("sequence_classification")
    config = TrainConfig.from_dict({"task": "classification", "base_model": str(verifily_tiny_deberta_dir),
                                    "data_paths": {"train": "t.jsonl"}, "task_options": {"pooling": "max"}})
    kwargs = LabelSet(["a", "b", "c"]).model_kwargs()  # the checkpoint's head has 2 labels
    model, tok = loader.load(ModelSource(config, regs), "AutoModelForSequenceClassification", **kwargs)
    assert isinstance(model.classifier, PooledHead) and model.classifier.pooling == "max"
    assert model.classifier.mlp[-1].out_features == 3 and tok.pad_token is not None
    plain, _ = loader.load(ModelSource(_config(base_model=str(verifily_tiny_deberta_dir)), regs),
                           "AutoModelForSequenceClassification", **kwargs)
    assert type(plain.classifier).__name__ == "Linear" and plain.classifier.out_features == 3
    assert plain.config.id2label == {0: "a", 1: "b", 2: "c"}
