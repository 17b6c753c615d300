"""SFT metrics on fixed predictions equal hand computations."""

from __future__ import annotations

import math

import pytest

from verifily_core.errors import ConfigError, EvalError
from verifily_metrics.lm import Loss, Perplexity
from verifily_metrics.text import (
    ExactMatch, FormatCompliance, GoldExactMatch, TokenF1, exact_match, normalize_answer, token_f1,
)


def _compute(metric, preds, refs, scores=None, **kwargs):
    scores = scores or [{} for _ in preds]
    return metric.compute(preds, refs, [{} for _ in preds], scores=scores, task="sft", **kwargs)


@pytest.mark.parametrize("text, expected", [
    ("The Cat!", "cat"),
    ("  an apple,  a pear and THE plum. ", "apple pear and plum"),
    ("theatre is not an article", "theatre is not article"),
    ("Hello\tworld\n", "hello world"),
    ("¿Qué?", "¿qué"),  # only ASCII punctuation is removed (as in the SQuAD script)
    ("", ""),
])
def test_squad_normalisation(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_by_hand():
    preds = ["The answer.", "paris", "Rome", "a b c"]
    refs = ["answer", "Paris!", "Milan", ["x", "A B C"]]  # a list reference: any of them
    assert [exact_match(p, r) for p, r in zip(preds, refs)] == [1.0, 1.0, 0.0, 1.0]
    assert _compute(ExactMatch(), preds, refs) == 0.75


def test_token_f1_by_hand():
    # pred tokens: [quick, brown, fox]; gold: [brown, fox, jumps, high] -> common 2
    # precision 2/3, recall 2/4, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    assert token_f1("The quick brown fox", "brown fox jumps high") == pytest.approx(4 / 7)
    # repeated tokens count with multiplicity: pred [a1 a1 b], gold [a1 b b] -> common 2
    assert token_f1("a1 a1 b", "a1 b b") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("the", "cat") == 0.0  # "the" normalises to nothing, gold does not
    assert token_f1("cat", ["dog", "cat"]) == 1.0
    preds, refs = ["The quick brown fox", "x", "cat"], ["brown fox jumps high", "y", "the cat"]
    assert _compute(TokenF1(), preds, refs) == pytest.approx((4 / 7 + 0 + 1) / 3)


def test_format_compliance_modes():
    fc = FormatCompliance()
    preds = ['{"a": 1, "b": 2}', '{"a": 1}', "[1, 2]", "not json", ' "text" ']
    refs = ['{"a": 0, "b": 0}', '{"a": 0, "b": 0}', "[3]", '{"a": 0}', "plain reference"]
    # auto: object refs need an object with the ref's keys; array refs an array; plain refs do not count
    assert [fc.per_example(p, r, {}, {}) for p, r in zip(preds, refs)] == [1.0, 0.0, 1.0, 0.0, None]
    assert _compute(fc, preds, refs) == pytest.approx(2 / 4)
    assert _compute(fc, preds, refs, format="json") == pytest.approx(4 / 5)
    assert _compute(fc, preds, refs, format="json_object") == pytest.approx(2 / 5)
    assert _compute(fc, preds, refs, format="json_object", required_keys=["b"]) == pytest.approx(1 / 5)
    assert _compute(fc, ["ID-12", "id-12", "ID-1x"], ["", "", ""], format="regex", pattern=r"ID-\d+") == pytest.approx(1 / 3)
    assert _compute(fc, ["plain"], ["plain"]) is None  # no row counts


def test_format_compliance_bad_options_are_config_errors():
    fc = FormatCompliance()
    with pytest.raises(ConfigError, match="needs a 'pattern'"):
        _compute(fc, ["x"], ["y"], format="regex")
    with pytest.raises(ConfigError, match="invalid pattern"):
        _compute(fc, ["x"], ["y"], format="regex", pattern="(")
    with pytest.raises(ConfigError, match="unknown format 'yaml'"):
        _compute(fc, ["x"], ["y"], format="yaml")


def test_gold_exact_match_is_exact_match_on_gold_rows():
    assert GoldExactMatch.gold_set and not ExactMatch.gold_set
    assert GoldExactMatch().per_example("The Cat", "cat", {}, {}) == 1.0


def test_loss_and_perplexity_are_token_weighted():
    scores = [{"loss": 1.0, "n_tokens": 1}, {"loss": 2.0, "n_tokens": 3}, {"loss": 4.0, "n_tokens": 0}]
    blank = [None] * 3
    expected = (1.0 * 1 + 2.0 * 3) / 4  # the row without tokens weighs nothing
    assert _compute(Loss(), blank, blank, scores) == pytest.approx(expected)
    assert _compute(Perplexity(), blank, blank, scores) == pytest.approx(math.exp(expected))
    stats = Loss().statistics(blank, blank, [{}] * 3, scores=scores)
    assert Loss().from_statistics(stats.sum(axis=0)) == pytest.approx(expected)
    assert Perplexity().from_statistics(stats.sum(axis=0)) == pytest.approx(math.exp(expected))
    # without n_tokens every row weighs 1
    assert _compute(Loss(), blank[:2], blank[:2], [{"loss": 1.0}, {"loss": 2.0}]) == pytest.approx(1.5)


def test_loss_without_model_scores_is_an_eval_error():
    with pytest.raises(EvalError, match="needs the per-example score 'loss'"):
        _compute(Loss(), ["p"], ["r"], [{}])


# prediction, reference, verdict of (text, strict, squad, numeric)
TRICKY_PAIRS = [
    ("3", "-3", (0, 0, 1, 0)),             # squad drops the sign
    ("-3", "\u22123", (1, 0, 0, 1)),       # a Unicode minus is a minus
    ("3.5", "35", (0, 0, 1, 0)),           # squad drops the decimal point
    ("3.50", "3.5", (0, 0, 0, 1)),         # equal as numbers only
    ("1,000", "1000", (0, 0, 1, 1)),       # digit grouping
    ("-0", "0", (0, 0, 1, 1)),
    ("The answer is 3.", "answer is 3", (1, 0, 1, 1)),  # a full stop after a number ends the sentence
    ("(-3),", "-3", (1, 0, 1, 1)),
    ("Paris", "paris", (1, 0, 1, 1)),      # case
    ("  paris \n", "paris", (1, 1, 1, 1)),  # surrounding whitespace
    ("new  york", "new york", (1, 0, 1, 1)),  # inner whitespace
    ("café", "CAFÉ", (1, 0, 1, 1)),        # Unicode case
    ("\uff11\uff12", "12", (1, 0, 0, 1)),   # full-width digits (NFKC)
    ("e\u0301", "\u00e9", (1, 1, 0, 1)),   # combining accent vs precomposed
    ("hello, world!", "hello world", (1, 0, 1, 1)),
]


@pytest.mark.parametrize("prediction, reference, verdicts", TRICKY_PAIRS)
def test_tricky_pairs_under_each_normalisation(prediction, reference, verdicts):
    modes = ("text", "strict", "squad", "numeric")
    got = tuple(int(exact_match(prediction, reference, mode)) for mode in modes)
    assert got == verdicts, dict(zip(modes, got))
    assert int(exact_match(prediction, reference)) == verdicts[0]  # text is the default
    for mode, verdict in zip(modes, verdicts):  # an exact match is a perfect token F1
        assert not verdict or token_f1(prediction, reference, mode) == 1.0


def test_the_normalisation_is_an_option_recorded_in_the_results():
    from verifily_core.evaluation import build_eval_result

    records = [{"index": i, "prediction": p, "reference": r, "tags": {}} for i, (p, r, _) in enumerate(TRICKY_PAIRS)]
    strict = build_eval_result(records, "sft", [ExactMatch()], resamples=0, metric_options={"exact_match": {"normalize": "squad"}})
    default = build_eval_result(records, "sft", [ExactMatch(), TokenF1()], resamples=0)
    assert strict.metric_settings == {"exact_match": {"normalize": "squad"}}
    assert default.metric_settings == {"exact_match": {"normalize": "text"}, "token_f1": {"normalize": "text"}}
    assert strict.to_json_dict()["metric_settings"] == strict.metric_settings
    expected = {m: sum(v[i] for *_, v in TRICKY_PAIRS) / len(TRICKY_PAIRS) for m, i in (("text", 0), ("squad", 2))}
    assert default.overall["exact_match"] == pytest.approx(expected["text"])
    assert strict.overall["exact_match"] == pytest.approx(expected["squad"])
    with pytest.raises(ConfigError, match="normalize: unknown mode 'loose'; use one of text, strict, squad, numeric"):
        build_eval_result(records, "sft", [ExactMatch()], resamples=0, metric_options={"exact_match": {"normalize": "loose"}})
