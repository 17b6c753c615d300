"""``build_eval_result`` on fixed predictions: every metric, slice and interval equals a hand computation."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest

from verifily_core import hookimpl
from verifily_core.errors import ConfigError, EvalError
from verifily_core.evaluation import build_eval_result
from verifily_core.interfaces import Metric
from verifily_core.plugins import load_registries, make_plugin_manager

# prediction, reference, source, difficulty, loss, n_tokens
DATA = [
    ("paris", "Paris", "human", "easy", 0.5, 2),
    ("the cat sat", "cat sat down", "human", "hard", 1.0, 3),
    ("blue", "red", "human", "easy", 2.0, 1),
    ("42", "42", "synthetic", "easy", 0.2, 1),
    ("big dog", "small dog", "synthetic", "hard", 1.5, 2),
    ("x y z", "a b c", "ai", "hard", 3.0, 3),
    ("nope", "yes", "ai", "easy", 2.5, 1),
    ("new york", "New York City", "ai", "hard", 1.2, 3),
]
EM = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
F1 = np.array([1, 0.8, 0, 1, 0.5, 0, 0, 0.8])  # worked out by hand (SQuAD token F1)
LOSS = np.array([d[4] for d in DATA])
NTOK = np.array([d[5] for d in DATA], dtype=float)
SFT_METRICS = ["exact_match", "token_f1", "loss", "perplexity"]


@pytest.fixture(scope="module")
def regs():
    return load_registries()


def _records(data=DATA):
    return [{"index": i, "row_id": f"sha256:{i:02d}", "prediction": p, "reference": r,
             "scores": {"loss": loss, "n_tokens": n}, "tags": {"source": s, "difficulty": d},
             "row": {"instruction": f"question {i}", "output": r, "tags": {"source": s, "difficulty": d}}}
            for i, (p, r, s, d, loss, n) in enumerate(data)]


def _build(regs, records=None, metrics=SFT_METRICS, task="sft", **kwargs):
    kwargs.setdefault("slice_by", ["source"])
    return build_eval_result(records if records is not None else _records(), regs.tasks.get(task),
                             [regs.metrics.get(m) for m in metrics], slicers=regs.slicers, **kwargs)


def hand_interval(values, weights, key, seed=42, resamples=1000, level=0.95, transform=None):
    """The documented bootstrap, written out: seeded positions, weighted means, percentiles."""
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    key_int = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    rng = np.random.default_rng([seed, key_int])
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    with np.errstate(invalid="ignore"):  # resamples without a counted row are undefined (NaN)
        stat = (values[idx] * weights[idx]).sum(axis=1) / weights[idx].sum(axis=1)
    stat = transform(stat) if transform else stat
    return tuple(np.nanpercentile(stat, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def _check(mv, value, interval):
    assert mv.value == pytest.approx(value, abs=1e-12)
    assert (mv.ci_low, mv.ci_high) == pytest.approx(interval, abs=1e-12)


def test_overall_metrics_and_intervals_equal_hand_computation(regs):
    res = _build(regs)
    assert res.num_examples == 8
    assert res.overall == pytest.approx({"exact_match": 0.25, "token_f1": 4.1 / 8, "loss": 24.3 / 16,
                                         "perplexity": math.exp(24.3 / 16)})
    ones = np.ones(8)
    _check(res.metric_values["exact_match"], 0.25, hand_interval(EM, ones, "overall"))
    _check(res.metric_values["token_f1"], 4.1 / 8, hand_interval(F1, ones, "overall"))
    _check(res.metric_values["loss"], 24.3 / 16, hand_interval(LOSS, NTOK, "overall"))
    _check(res.metric_values["perplexity"], math.exp(24.3 / 16), hand_interval(LOSS, NTOK, "overall", transform=np.exp))
    assert res.metric_values["token_f1"].n == 8
    assert res.higher_is_better == {"exact_match": True, "token_f1": True, "loss": False, "perplexity": False}
    # per-example values are stored on the records
    assert [r["scores"]["token_f1"] for r in res.records] == pytest.approx(F1.tolist())
    assert [r["scores"]["exact_match"] for r in res.records] == EM.tolist()


def test_slice_metrics_and_intervals_equal_hand_computation(regs):
    res = _build(regs, min_slice_size=3)
    members = {"source=ai": [5, 6, 7], "source=human": [0, 1, 2], "source=synthetic": [3, 4]}
    assert list(res.slice_results) == list(members)  # by size, then name
    for name, idx in members.items():
        s = res.slice_results[name]
        assert (s.n, s.small, s.keys, s.spec) == (len(idx), len(idx) < 3, ["source"], "source")
        ones = np.ones(len(idx))
        _check(s.metrics["exact_match"], EM[idx].mean(), hand_interval(EM[idx], ones, name))
        _check(s.metrics["token_f1"], F1[idx].mean(), hand_interval(F1[idx], ones, name))
        loss = (LOSS[idx] * NTOK[idx]).sum() / NTOK[idx].sum()
        _check(s.metrics["loss"], loss, hand_interval(LOSS[idx], NTOK[idx], name))
        _check(s.metrics["perplexity"], math.exp(loss), hand_interval(LOSS[idx], NTOK[idx], name, transform=np.exp))
    assert res.slices["source=human"]["token_f1"] == pytest.approx(0.6)
    assert res.slices["source=synthetic"]["loss"] == pytest.approx(3.2 / 3)


def test_crossed_slices_are_computed_on_their_rows(regs):
    res = _build(regs, slice_by="source&difficulty", min_slice_size=1)
    sizes = {name: s.n for name, s in res.slice_results.items()}
    assert sum(sizes.values()) == 8
    assert res.slices["source=ai&difficulty=hard"]["token_f1"] == pytest.approx(0.8 / 2)
    assert res.slice_results["source=ai&difficulty=hard"].keys == ["source", "difficulty"]


def test_constant_metric_has_zero_width_interval(regs):
    data = [(r, r, s, d, 1.0, 2) for _, r, s, d, _, _ in DATA]
    res = _build(regs, _records(data))
    for mv in [res.metric_values["exact_match"], *(s.metrics["exact_match"] for s in res.slice_results.values())]:
        assert (mv.value, mv.ci_low, mv.ci_high) == (1.0, 1.0, 1.0)
    assert (res.metric_values["loss"].ci_low, res.metric_values["loss"].ci_high) == (1.0, 1.0)


def test_tiny_hand_enumerated_case(regs):
    """Two rows with exact match 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4."""
    records = _records([("a", "a", "h", "e", 1.0, 1), ("a", "b", "h", "e", 1.0, 1)])
    res = _build(regs, records, metrics=["exact_match"], slice_by=())
    assert res.metric_values["exact_match"].interval == (0.0, 1.0)  # 2.5% and 97.5% fall in the outer blocks
    res = _build(regs, records, metrics=["exact_match"], slice_by=(), confidence_level=0.4)
    assert res.metric_values["exact_match"].interval == (0.5, 0.5)  # 30% and 70% fall in the middle block
    one = _build(regs, records[:1], metrics=["exact_match"], slice_by=())
    assert one.metric_values["exact_match"].interval == (1.0, 1.0)


def _random_records(n=300, seed=0):
    rnd = random.Random(seed)
    data = []
    for _ in range(n):
        ref = " ".join(rnd.choice("abcdef") for _ in range(rnd.randint(1, 6)))
        pred = ref if rnd.random() < 0.6 else " ".join(rnd.choice("abcdef") for _ in range(3))
        data.append((pred, ref, rnd.choice(["h", "s", "c"]), rnd.choice(["e", "d"]), rnd.uniform(0.1, 3), rnd.randint(1, 9)))
    return _records(data)


def test_intervals_contain_the_estimate_and_are_reproducible(regs):
    records = _random_records()
    a = _build(regs, records, slice_by=["source", "source&difficulty"])
    for mvs in [a.metric_values, *(s.metrics for s in a.slice_results.values())]:
        for mv in mvs.values():
            assert mv.ci_low <= mv.value <= mv.ci_high and mv.ci_low < mv.ci_high
    b = _build(regs, records, slice_by=["source", "source&difficulty"])
    assert a.metric_values == b.metric_values and a.slice_results == b.slice_results
    c = _build(regs, records, slice_by=["source", "source&difficulty"], seed=7)
    assert c.overall == a.overall and c.metric_values["token_f1"].interval != a.metric_values["token_f1"].interval
    # a slice's interval does not depend on which other slices were requested
    d = _build(regs, records, slice_by=["source"])
    assert d.slice_results["source=h"].metrics == a.slice_results["source=h"].metrics
    assert a.confidence == {"method": "percentile bootstrap", "level": 0.95, "resamples": 1000, "seed": 42}
    none = _build(regs, records, resamples=0)
    assert none.metric_values["token_f1"].interval is None and none.overall == a.overall


def test_rows_that_do_not_count_are_left_out_of_values_and_resamples(regs):
    data = [('{"a": 1}', '{"a": 2}', "h", "e", 1, 1), ("text", '{"a": 2}', "h", "e", 1, 1),
            ("free", "plain", "h", "e", 1, 1), ('{"b": 1}', '{"a": 2}', "s", "e", 1, 1)]
    res = _build(regs, _records(data), metrics=["format_compliance"], slice_by=())
    mv = res.metric_values["format_compliance"]
    assert (mv.value, mv.n) == (pytest.approx(1 / 3), 3)
    counted = np.array([1, 1, 0, 1.0])
    assert mv.interval == pytest.approx(hand_interval([1, 0, 0, 0], counted, "overall"), abs=1e-12)
    assert "format_compliance" not in res.records[2]["scores"]


class Chars(Metric):
    """A third-party metric with only ``compute``: mean prediction length in characters."""

    name = "chars"
    higher_is_better = False
    calls = 0

    def compute(self, predictions, references, rows, **kwargs):
        Chars.calls += 1
        assert len(rows) == len(predictions) and all("instruction" in r for r in rows)
        assert len(kwargs["scores"]) == len(predictions) and kwargs["task"] == "sft"
        return sum(len(p) for p in predictions) / len(predictions)


class ChartPlugin:
    plugin_name = "chars-plugin"

    @hookimpl
    def verifily_register_metrics(self, registry):
        registry.add(Chars())


def test_third_party_compute_only_metric_gets_values_and_intervals(regs):
    plugin_regs = load_registries(make_plugin_manager(plugins=[ChartPlugin()]))
    Chars.calls = 0
    res = _build(plugin_regs, metrics=["token_f1", "chars"], min_slice_size=1)
    lengths = np.array([len(d[0]) for d in DATA], dtype=float)
    _check(res.metric_values["chars"], lengths.mean(), hand_interval(lengths, np.ones(8), "overall"))
    idx = [0, 1, 2]
    _check(res.slice_results["source=human"].metrics["chars"], lengths[idx].mean(),
           hand_interval(lengths[idx], np.ones(3), "source=human"))
    assert Chars.calls == 4 * 1001  # overall and three slices: the value plus 1000 resamples each
    assert res.higher_is_better["chars"] is False


def test_gold_metric_uses_gold_rows_only(regs):
    records = _records()
    records[0]["tags"]["gold"] = True   # a test row tagged gold
    records[2]["tags"]["gold"] = "true"
    records.append({"index": 100, "row_id": "sha256:g", "prediction": "Rome", "reference": "rome", "split": "gold",
                    "gold": True, "scores": {"loss": 9.0, "n_tokens": 1}, "tags": {"source": "human"}})
    res = _build(regs, records, metrics=["exact_match", "gold_exact_match", "loss"], min_slice_size=1)
    assert res.num_examples == 8  # the appended gold row is not a test row
    gold = res.metric_values["gold_exact_match"]
    assert (gold.value, gold.n) == (pytest.approx(2 / 3), 3)  # rows 0 (match), 2 (no), gold row (match)
    assert gold.interval == pytest.approx(hand_interval([1, 0, 1], np.ones(3), "overall|gold"), abs=1e-12)
    assert res.overall["exact_match"] == 0.25 and res.overall["loss"] == pytest.approx(24.3 / 16)
    human = res.slice_results["source=human"]
    assert human.n == 3 and human.metrics["gold_exact_match"].value == pytest.approx(0.5)
    assert res.slice_results["source=ai"].metrics["gold_exact_match"].value is None
    assert all(h["index"] != 100 for h in res.hard_examples)
    from verifily_core.evaluation import render_eval

    assert any(line.startswith("    gold_exact_match:") and line.endswith("(n=3)") for line in render_eval(res).splitlines())


def test_hard_examples_are_the_worst_rows(regs):
    records = _random_records(200, seed=3)
    res = _build(regs, records, hard_examples=25)
    assert res.hard_score == "token_f1" and res.hard_higher_is_better is True
    f1 = [r["scores"]["token_f1"] for r in res.records]
    loss = [r["scores"]["loss"] for r in res.records]
    hard = [h["index"] for h in res.hard_examples]
    assert res.hard_tie_break == ["loss"]  # exact_match takes two values: it breaks no tie
    assert max(h["score"] for h in res.hard_examples) <= min(f1[i] for i in range(len(f1)) if i not in hard)
    for a, b in zip(hard, hard[1:]):  # worst first: lower F1, and among equal F1 the higher loss
        assert f1[a] < f1[b] or (f1[a] == f1[b] and loss[a] >= loss[b])
    h = res.hard_examples[0]
    assert set(h) >= {"index", "row_id", "prediction", "reference", "scores", "tags", "score"} and "row" not in h
    # loss ranks highest first when it is the score
    res = _build(regs, records, metrics=["loss"], hard_examples=5)
    losses = [r["scores"]["loss"] for r in records]
    assert res.hard_score == "loss" and [h["index"] for h in res.hard_examples] == \
        sorted(range(len(losses)), key=lambda i: (-losses[i], i))[:5]
    res = _build(regs, records, metrics=["token_f1", "loss"], hard_examples=5, hard_score="loss")
    assert res.hard_score == "loss"
    with pytest.raises(ConfigError, match="no row has the score 'p_true'"):
        _build(regs, records, hard_examples=5, hard_score="p_true")


def test_classification_hard_examples_rank_by_probability_of_the_true_label(regs):
    probs = [0.9, 0.2, 0.6, 0.05, 0.7, 0.4]
    records = [{"prediction": "a" if p > 0.5 else "b", "reference": "a", "scores": {"p_true": p},
                "tags": {"source": "x"}} for p in probs]
    res = build_eval_result(records, regs.tasks.get("classification"), [regs.metrics.get("accuracy")],
                            hard_examples=3)
    assert res.hard_score == "p_true" and [h["index"] for h in res.hard_examples] == [3, 1, 5]


def test_over_represented_tag_values_among_hard_examples(regs):
    # 12 rows: 3 "bad" rows are all wrong, 9 "good" rows: 1 wrong
    data = [("x", "y", "bad", "e", 1, 1)] * 3 + [("a", "a", "good", "e", 1, 1)] * 8 + [("x", "y", "good", "e", 1, 1)]
    res = _build(regs, _records(data), metrics=["token_f1"], hard_examples=4, slice_by=())
    assert sorted(h["index"] for h in res.hard_examples) == [0, 1, 2, 11]
    assert res.hard_tested == 4
    top = res.over_represented[0]
    # searched over every tag key even without --slice-by
    assert top["slice"] == "source=bad" and (top["hard_count"], top["test_count"]) == (3, 3)
    assert (top["hard_share"], top["test_share"], top["lift"]) == (0.75, 0.25, 3.0)
    # P(all 3 "bad" rows among 4 drawn from 12) = C(3,3) C(9,1) / C(12,4)
    assert top["p_value"] == pytest.approx(9 / math.comb(12, 4), rel=1e-3)
    assert all(e["slice"] != "source=good" for e in res.over_represented)


def test_details_and_scalar_classification_metrics(regs):
    refs = ["a", "a", "b", "b", "c", "c"]
    preds = ["a", "b", "b", "b", "a", "a"]
    records = [{"prediction": p, "reference": r, "tags": {"k": "x" if i < 3 else "y"}}
               for i, (p, r) in enumerate(zip(preds, refs))]
    names = ["accuracy", "macro_f1", "confusion_matrix", "per_class"]
    res = build_eval_result(records, "classification", [regs.metrics.get(n) for n in names], slicers=regs.slicers,
                            slice_by="k", metric_kwargs={"labels": ["a", "b", "c"]}, min_slice_size=1)
    assert set(res.overall) == {"accuracy", "macro_f1"} and set(res.details) == {"confusion_matrix", "per_class"}
    assert res.details["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert res.details["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert res.metrics == names
    # macro F1 on a slice equals the metric computed on that slice's rows alone
    macro = regs.metrics.get("macro_f1")
    sub = records[3:]
    want = macro.compute([r["prediction"] for r in sub], [r["reference"] for r in sub], [{}] * 3, labels=["a", "b", "c"])
    assert res.slices["k=y"]["macro_f1"] == pytest.approx(want)


def test_configuration_and_plugin_errors(regs):
    with pytest.raises(ConfigError, match="metric 'accuracy' applies to task\\(s\\) classification, not 'sft'"):
        _build(regs, metrics=["accuracy"])
    with pytest.raises(ConfigError, match="selected twice"):
        _build(regs, metrics=["loss", "loss"])

    class Broken(Metric):
        name = "broken"

        def per_example(self, prediction, reference, row, scores, **kwargs):
            raise ValueError("boom")

        def compute(self, predictions, references, rows, **kwargs):
            return 0.0

    with pytest.raises(EvalError, match="metric 'broken' failed on record 0: ValueError: boom"):
        build_eval_result(_records(), "sft", [Broken()])
    with pytest.raises(EvalError, match="has no 'reference'"):
        build_eval_result([{"prediction": "x"}], "sft", [Broken()])


def _tied_records(n, first_tag, rest_tag, loss=None):
    """``n`` rows all scoring exact_match 0; the first half tagged ``first_tag``."""
    return [{"index": i, "row_id": f"sha256:{i:04d}", "prediction": "x", "reference": "y",
             "tags": {"difficulty": first_tag if i < n // 2 else rest_tag},
             "scores": {} if loss is None else {"loss": loss(i), "n_tokens": 1}} for i in range(n)]


def test_all_rows_tied_report_no_over_representation_and_not_the_first_rows(regs):
    records = _tied_records(100, "easy", "hard")
    res = build_eval_result(records, regs.tasks.get("sft"), [regs.metrics.get("exact_match")],
                            slicers=regs.slicers, hard_examples=20, resamples=0)
    assert res.hard_score == "exact_match" and res.hard_tie_break == []
    assert res.hard_tested == 100 and res.over_represented == []
    hard = [h["index"] for h in res.hard_examples]
    assert 0 < sum(i < 50 for i in hard) < 20  # a hash order, not the file order, picks among tied rows
    from verifily_core.evaluation import render_eval

    text = render_eval(res)
    assert "100 test rows are no better than the last of them (exact_match=0)" in text
    assert "every test row ties, so no slice can be over-represented" in text
    assert "of hard examples are" not in text


def test_a_planted_slice_is_named_when_exact_match_ties_and_loss_breaks_them():
    """The planted rows (difficulty=planted, late in the file) fail with a high loss; the first
    rows of the file also fail exact match, but with a low loss."""
    from verifily_core.plugins import load_registries

    regs = load_registries()
    records = []
    for i in range(90):
        planted = 60 <= i < 75
        wrong = i < 30 or planted
        records.append({"index": i, "row_id": f"sha256:{i:04d}", "prediction": "x" if wrong else "y",
                        "reference": "y", "tags": {"difficulty": "planted" if planted else "first" if i < 30 else "rest"},
                        "scores": {"loss": (5.0 + i / 100) if planted else (0.5 + i / 1000), "n_tokens": 1}})
    res = build_eval_result(records, regs.tasks.get("sft"), [regs.metrics.get(m) for m in ("exact_match", "loss")],
                            slicers=regs.slicers, hard_examples=15, hard_score="exact_match", resamples=0)
    assert res.hard_tie_break == ["loss"] and res.hard_tested == 15
    assert {h["tags"]["difficulty"] for h in res.hard_examples} == {"planted"}
    top = res.over_represented[0]
    assert top["slice"] == "difficulty=planted" and top["hard_share"] == 1.0
    assert all(e["slice"] != "difficulty=first" for e in res.over_represented)
