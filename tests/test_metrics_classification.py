"""Classification metrics equal scikit-learn's on fixed predictions (scikit-learn is a test-only dependency)."""

from __future__ import annotations

import pytest

from verifily_core.errors import DataError
from verifily_metrics.classification import (
    Accuracy, ClassificationReport, ConfusionMatrix, MacroF1, PerClass, WeightedF1,
)

sk = pytest.importorskip("sklearn.metrics")

LABELS = ["neg", "neu", "pos", "spam"]  # "spam" never occurs; "neu" is never predicted
REFS = ["neg", "neg", "neu", "neu", "pos", "pos", "pos", "neg", "pos", "neu"]
PREDS = ["neg", "pos", "neg", "pos", "pos", "pos", "neg", "neg", "pos", "neg"]


def _compute(metric, preds=PREDS, refs=REFS, **kwargs):
    return metric.compute(preds, refs, [{} for _ in preds], scores=[{} for _ in preds], task="classification", **kwargs)


def test_scalar_metrics_equal_sklearn_with_a_never_predicted_class():
    assert _compute(Accuracy()) == pytest.approx(sk.accuracy_score(REFS, PREDS))
    for labels in (LABELS, None):  # run's label set, or the union of references and predictions
        sk_labels = labels or sorted(set(REFS) | set(PREDS))
        macro = sk.f1_score(REFS, PREDS, labels=sk_labels, average="macro", zero_division=0)
        weighted = sk.f1_score(REFS, PREDS, labels=sk_labels, average="weighted", zero_division=0)
        assert _compute(MacroF1(), labels=labels) == pytest.approx(macro)
        assert _compute(WeightedF1(), labels=labels) == pytest.approx(weighted)
    # the never-predicted "neu" and the absent "spam" both count as F1 0 in the macro average
    per_class = sk.f1_score(REFS, PREDS, labels=LABELS, average=None, zero_division=0)
    assert per_class[1] == 0 and per_class[3] == 0
    assert _compute(MacroF1(), labels=LABELS) == pytest.approx(sum(per_class) / 4)


def test_per_class_and_report_equal_sklearn():
    p, r, f, s = sk.precision_recall_fscore_support(REFS, PREDS, labels=LABELS, zero_division=0)
    got = _compute(PerClass(), labels=LABELS)
    assert list(got) == LABELS
    for i, label in enumerate(LABELS):
        assert got[label] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    expected = sk.classification_report(REFS, PREDS, labels=LABELS, output_dict=True, zero_division=0)
    report = _compute(ClassificationReport(), labels=LABELS)
    assert set(report) == set(expected) | {"accuracy"}
    for key, value in expected.items():
        assert report[key] == pytest.approx(value), key
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(REFS, PREDS))


def test_confusion_matrix_equals_sklearn_and_keeps_out_of_set_predictions():
    got = _compute(ConfusionMatrix(), labels=LABELS)
    assert got["labels"] == LABELS and got["columns"] == LABELS
    assert got["matrix"] == sk.confusion_matrix(REFS, PREDS, labels=LABELS).tolist()
    preds = PREDS[:-1] + ["maybe"]  # a generated label outside the set
    got = _compute(ConfusionMatrix(), preds=preds, labels=LABELS)
    assert got["columns"] == LABELS + ["<other>"]
    assert [row[-1] for row in got["matrix"]] == [0, 1, 0, 0]
    # outside-set predictions are wrong and a false positive for no class (sklearn with labels=)
    assert _compute(MacroF1(), preds=preds, labels=LABELS) == pytest.approx(
        sk.f1_score(REFS, preds, labels=LABELS, average="macro", zero_division=0))
    assert _compute(Accuracy(), preds=preds) == pytest.approx(sk.accuracy_score(REFS, preds))


def test_integer_and_string_labels_are_the_same_label():
    refs, preds = [0, 1, 1, 2], ["0", "1", "2", "2"]
    assert _compute(Accuracy(), preds=preds, refs=refs) == 0.75
    assert _compute(MacroF1(), preds=preds, refs=refs, labels={0: "0", 1: "1", 2: "2"}) == pytest.approx(
        sk.f1_score([0, 1, 1, 2], [0, 1, 2, 2], average="macro"))
    # without a label set, integer-like labels sort numerically
    assert _compute(ConfusionMatrix(), preds=["10", "2"], refs=["2", "10"])["labels"] == ["2", "10"]


def test_reference_outside_the_label_set_is_a_data_error():
    with pytest.raises(DataError, match="reference label 'other' is not in the run's label set"):
        _compute(MacroF1(), preds=["neg"], refs=["other"], labels=LABELS)


def test_statistics_reproduce_compute():
    for metric in (MacroF1(), WeightedF1()):
        stats = metric.statistics(PREDS, REFS, [{}] * len(PREDS), labels=LABELS)
        assert stats.shape == (len(PREDS), len(LABELS) * (len(LABELS) + 1))
        assert float(metric.from_statistics(stats.sum(axis=0))) == pytest.approx(_compute(metric, labels=LABELS))


def test_confusion_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    details = _compute(ConfusionMatrix(), labels=LABELS)
    assert ConfusionMatrix().write_artifacts(details, tmp_path) == ["confusion_matrix.png"]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_modules_work_offline(monkeypatch):
    """The one test that pays for importing ``evaluate``: local modules, no Hub access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from verifily_metrics.hf import MODULES, load

    import evaluate

    module = load("macro_f1")
    assert isinstance(module, evaluate.Metric)
    assert "predictions" in module.features and "references" in module.features
    out = module.compute(predictions=PREDS, references=REFS, labels=LABELS)
    assert out["macro_f1"] == pytest.approx(sk.f1_score(REFS, PREDS, labels=LABELS, average="macro", zero_division=0))
    assert load("token_f1").compute(predictions=["The quick brown fox"], references=["brown fox jumps high"]) == \
        {"token_f1": pytest.approx(4 / 7)}
    assert load("perplexity").compute(losses=[1.0, 2.0], n_tokens=[1, 3])["perplexity"] == pytest.approx(2.71828 ** 1.75, rel=1e-4)
    assert set(MODULES) >= {"exact_match", "accuracy", "confusion_matrix", "loss", "micro_f1", "hamming_loss"}
    assert load("hamming_loss").compute(predictions=PREDS, references=REFS)["hamming_loss"] == pytest.approx(
        sk.hamming_loss(REFS, PREDS))
    # label sets through the "multilabel" config, as evaluate's own f1 takes them
    y, p = _indicator(ML_REFS), _indicator(ML_PREDS)
    micro = load("micro_f1", config_name="multilabel")
    assert micro.compute(predictions=ML_PREDS, references=ML_REFS, labels=ML_LABELS)["micro_f1"] == pytest.approx(
        sk.f1_score(y, p, average="micro", zero_division=0))
    for batch in range(0, 8, 3):  # evaluate's incremental form
        micro.add_batch(predictions=ML_PREDS[batch:batch + 3], references=ML_REFS[batch:batch + 3])
    assert micro.compute(labels=ML_LABELS)["micro_f1"] == pytest.approx(sk.f1_score(y, p, average="micro"))
    assert load("hamming_loss", config_name="multilabel").compute(
        predictions=ML_PREDS, references=ML_REFS, labels=ML_LABELS)["hamming_loss"] == pytest.approx(sk.hamming_loss(y, p))
    cm = load("confusion_matrix", config_name="multilabel").compute(predictions=ML_PREDS, references=ML_REFS,
                                                                    labels=ML_LABELS)["confusion_matrix"]
    assert cm["multi_label"] and cm["labels"] == ML_LABELS
    with pytest.raises(Exception):  # one label per row is not a label list
        load("micro_f1", config_name="multilabel").compute(predictions=PREDS, references=REFS)


# -- multi-label --------------------------------------------------------------------------------

ML_LABELS = ["a", "b", "c", "d"]  # "d" never occurs
ML_REFS = [["a"], ["a", "b"], [], ["c"], ["b", "c"], ["a", "c"], ["b"], []]
ML_PREDS = [["a"], ["a"], ["b"], ["c"], ["b", "c"], ["c"], [], []]


def _indicator(sets):
    return [[int(label in s) for label in ML_LABELS] for s in sets]


def test_multilabel_metrics_equal_sklearn():
    from verifily_metrics.classification import HammingLoss, MicroF1, SubsetAccuracy

    y, p = _indicator(ML_REFS), _indicator(ML_PREDS)
    kw = {"preds": ML_PREDS, "refs": ML_REFS, "labels": ML_LABELS}
    for metric, average in ((MacroF1(), "macro"), (WeightedF1(), "weighted"), (MicroF1(), "micro")):
        assert _compute(metric, **kw) == pytest.approx(sk.f1_score(y, p, average=average, zero_division=0))
    assert _compute(SubsetAccuracy(), **kw) == pytest.approx(sk.accuracy_score(y, p)) == 4 / 8
    assert _compute(Accuracy(), **kw) == 4 / 8  # accuracy of label sets is subset accuracy
    assert _compute(HammingLoss(), **kw) == pytest.approx(sk.hamming_loss(y, p)) == 4 / 32
    pr, rc, f1, support = sk.precision_recall_fscore_support(y, p, zero_division=0)
    got = _compute(PerClass(), **kw)
    assert list(got) == ML_LABELS
    for i, label in enumerate(ML_LABELS):
        assert got[label] == pytest.approx({"precision": pr[i], "recall": rc[i], "f1": f1[i], "support": support[i]})
    report = _compute(ClassificationReport(), **kw)
    expected = sk.classification_report(y, p, target_names=ML_LABELS, output_dict=True, zero_division=0)
    assert set(report) == set(expected) and "samples avg" in report
    for key, value in expected.items():
        assert report[key] == pytest.approx(value), key
    cm = _compute(ConfusionMatrix(), **kw)
    assert cm["multi_label"] and cm["columns"] == ["tp", "fp", "fn", "tn"]
    assert cm["matrix"] == [[m[1][1], m[0][1], m[1][0], m[0][0]] for m in sk.multilabel_confusion_matrix(y, p).tolist()]
    # order and spelling inside a set do not matter; the union is the label set when none is given
    assert _compute(SubsetAccuracy(), preds=[["b", "a"]], refs=[["a", "b"]]) == 1.0
    assert _compute(HammingLoss(), preds=[["b"]], refs=[["a", "b"]]) == 0.5


def test_multilabel_statistics_reproduce_compute_and_are_told_from_a_confusion_matrix():
    from verifily_metrics.classification import HammingLoss, MicroF1

    for k in range(1, 40):  # 3K + 1 label counts are never K'(K' + 1) confusion cells
        assert all(j * (j + 1) != 3 * k + 1 for j in range(1, 60))
    for metric in (MacroF1(), WeightedF1(), MicroF1(), HammingLoss()):
        stats = metric.statistics(ML_PREDS, ML_REFS, [{}] * 8, labels=ML_LABELS)
        assert stats.shape == (8, 13)
        assert float(metric.from_statistics(stats.sum(axis=0))) == pytest.approx(
            _compute(metric, preds=ML_PREDS, refs=ML_REFS, labels=ML_LABELS))


def test_single_label_micro_f1_and_hamming_loss_equal_sklearn():
    from verifily_metrics.classification import HammingLoss, MicroF1, SubsetAccuracy

    assert _compute(MicroF1(), labels=LABELS) == pytest.approx(sk.f1_score(REFS, PREDS, average="micro"))
    assert _compute(HammingLoss(), labels=LABELS) == pytest.approx(sk.hamming_loss(REFS, PREDS))
    assert _compute(SubsetAccuracy()) == pytest.approx(sk.accuracy_score(REFS, PREDS))


def test_multilabel_reference_problems_are_data_errors():
    from verifily_metrics.classification import MicroF1

    with pytest.raises(DataError, match="reference label 'z' is not in the run's label set"):
        _compute(MicroF1(), preds=[["a"]], refs=[["z"]], labels=ML_LABELS)
    with pytest.raises(DataError, match="mix label lists"):
        _compute(MicroF1(), preds=["a", ["a"]], refs=["a", ["a"]], labels=ML_LABELS)
