"""The ``eval/`` files (docs/run-directory.md), the terminal report, reading results back, paired deltas."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from verifily_core.errors import EvalError
from verifily_core.evaluation import (
    build_eval_result, load_eval_result, paired_bootstrap_delta, read_jsonl, render_eval, write_eval_files,
)
from verifily_core.evaluation.paired import metric_value
from verifily_core.hashing import sha256_file
from verifily_core.plugins import load_registries


@pytest.fixture(scope="module")
def regs():
    return load_registries()


def _records(n=40):
    out = []
    for i in range(n):
        source = "ai_contaminated" if i % 4 == 0 else "human"
        ok = source == "human" and i % 5 != 0
        out.append({"index": i, "row_id": f"sha256:{i:03d}", "prediction": f"answer {i}" if ok else "wrong",
                    "reference": f"answer {i}", "scores": {"loss": 0.5 if ok else 2.0, "n_tokens": 2},
                    "tags": {"source": source}, "row": {"instruction": f"q{i}", "output": f"answer {i}"}})
    return out


def _result(regs, records=None, **kwargs):
    metrics = [regs.metrics.get(m) for m in ("exact_match", "token_f1", "loss")]
    kwargs.setdefault("slice_by", ["source"])
    return build_eval_result(records or _records(), regs.tasks.get("sft"), metrics, slicers=regs.slicers,
                             hard_examples=8, min_slice_size=15, row_input=lambda row: {"instruction": row.get("instruction")}, run_id="run_x",
                             test_data={"path": "data/test.jsonl", "sha256": "sha256:abc", "split": "test"}, **kwargs)


def test_files_follow_the_contract(regs, tmp_path):
    res = _result(regs)
    paths = write_eval_files(res, tmp_path / "eval")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["eval_hashes.json", "eval_results.json",
                                                                    "hard_examples.jsonl", "predictions.jsonl"]
    assert set(paths) == {"eval_hashes.json", "eval_results.json", "hard_examples.jsonl", "predictions.jsonl"}
    doc = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert doc["format_version"] == 1 and doc["run_id"] == "run_x" and doc["task"] == "sft"
    assert doc["test_data"] == {"path": "data/test.jsonl", "sha256": "sha256:abc", "split": "test", "num_examples": 40}
    assert doc["metrics"] == ["exact_match", "token_f1", "loss"]
    assert doc["confidence"] == {"method": "percentile bootstrap", "level": 0.95, "resamples": 1000, "seed": 42}
    assert doc["overall"]["n"] == 40 and set(doc["overall"]["metrics"]["token_f1"]) == {"value", "ci_low", "ci_high", "n"}
    human = doc["slices"]["source=human"]
    assert (human["keys"], human["n"], human["small"]) == (["source"], 30, False)
    assert doc["slices"]["source=ai_contaminated"]["small"] is True  # 10 < 15
    assert doc["hard_examples"]["count"] == 8 and doc["hard_examples"]["score"] == "token_f1"
    assert doc["hard_examples"]["over_represented"][0]["slice"] == "source=ai_contaminated"
    assert doc["note"] == "Slice metrics show correlation, not causation."
    for name in ("predictions.jsonl", "hard_examples.jsonl"):
        assert doc["files"][name] == sha256_file(tmp_path / "eval" / name)
    preds = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    assert [p["index"] for p in preds] == list(range(40))
    assert set(preds[0]) == {"index", "row_id", "prediction", "reference", "scores", "tags", "input", "slices"}
    # each prediction names the slices the evaluation put it in, so readers never slice again
    assert all(p["slices"] == [f"source={p['tags']['source']}"] for p in preds)
    assert preds[0]["input"] == {"instruction": "q0"} and preds[1]["scores"]["token_f1"] == 1.0
    hard = read_jsonl(tmp_path / "eval" / "hard_examples.jsonl")
    assert [h["index"] for h in hard] == [h["index"] for h in res.hard_examples] and "score" in hard[0]


def test_rewriting_replaces_files_and_drops_stale_artifacts(regs, tmp_path):
    refs = ["a", "b", "a", "b"]
    records = [{"prediction": "a", "reference": r, "tags": {}} for r in refs]
    metrics = [regs.metrics.get(m) for m in ("accuracy", "confusion_matrix")]
    res = build_eval_result(records, "classification", metrics)
    write_eval_files(res, tmp_path)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert "confusion_matrix.png" in json.loads((tmp_path / "eval_results.json").read_text())["files"]
    (tmp_path / "notes.txt").write_text("mine")
    res2 = build_eval_result(records, "classification", metrics[:1])
    write_eval_files(res2, tmp_path)
    assert not (tmp_path / "confusion_matrix.png").exists()  # listed by the previous results, not by these
    assert (tmp_path / "notes.txt").read_text() == "mine"  # files evaluation never wrote are left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_failed_write_leaves_previous_results_intact(regs, tmp_path):
    res = _result(regs)
    write_eval_files(res, tmp_path)
    before = (tmp_path / "eval_results.json").read_bytes()
    seal = (tmp_path / "eval_hashes.json").read_bytes()

    class Exploding:
        def write_artifacts(self, details, out_dir):
            (out_dir / "partial.png").write_bytes(b"half")
            raise OSError(28, "No space left on device")

    res.details["plot"] = {}
    res.metric_objects["plot"] = Exploding()
    with pytest.raises(EvalError, match="no space left on device; free space or write the results elsewhere"):
        write_eval_files(res, tmp_path)
    assert (tmp_path / "eval_results.json").read_bytes() == before
    assert (tmp_path / "eval_hashes.json").read_bytes() == seal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_hashes.json", "eval_results.json",
                                                          "hard_examples.jsonl", "predictions.jsonl"]


def test_load_round_trip(regs, tmp_path):
    res = _result(regs)
    write_eval_files(res, tmp_path / "run" / "eval")
    back = load_eval_result(tmp_path / "run")
    assert back.overall == res.overall and back.slices == res.slices and back.intervals == res.intervals
    assert back.slice_results == res.slice_results and back.hard_examples == json.loads(json.dumps(res.hard_examples))
    assert back.to_json_dict() == json.loads((tmp_path / "run" / "eval" / "eval_results.json").read_text())
    with pytest.raises(EvalError, match="no eval_results.json found"):
        load_eval_result(tmp_path / "nowhere")
    doc = back.to_json_dict()
    doc["format_version"] = 99
    (tmp_path / "eval_results.json").write_text(json.dumps(doc))
    with pytest.raises(EvalError, match="format_version 99 is not supported"):
        load_eval_result(tmp_path)


def test_render_matches_the_cli_design(regs, tmp_path):
    res = _result(regs)
    write_eval_files(res, tmp_path)
    text = render_eval(res)
    lines = text.splitlines()
    assert lines[0] == "Evaluation: run_x"
    assert "  Test set: 40 examples (data/test.jsonl)" in lines
    f1 = res.metric_values["token_f1"]
    assert f"    token_f1:     {f1.value:.4f}   [{f1.ci_low:.2f}, {f1.ci_high:.2f}]" in lines
    assert "  Sliced by [source]:" in lines
    human = res.slice_results["source=human"].metrics["token_f1"]
    row = next(line for line in lines if line.startswith("    source=human "))
    assert row.startswith("    source=human           (n=30):         ")
    assert f"token_f1={human.value:.4f} [{human.ci_low:.2f}, {human.ci_high:.2f}]" in row
    assert any(line.startswith("    source=ai_contaminated (n=10, small):") for line in lines)
    share = res.over_represented[0]
    assert f"    {share['hard_share']:.0%} of hard examples are source=ai_contaminated vs 25% of the test set" in text
    assert f"  Hard examples written to: {tmp_path / 'hard_examples.jsonl'} (8 examples, lowest token_f1 first)" in lines
    assert f"  Full results: {tmp_path / 'eval_results.json'}" in lines
    assert "  Intervals: 95% percentile bootstrap, 1000 resamples, seed 42; small: n < 15" in lines
    assert lines[-1] == "  Note: Slice metrics show correlation, not causation."


def test_render_shows_confusion_matrix_and_narrow_intervals(regs):
    records = [{"prediction": p, "reference": r, "tags": {}} for p, r in zip("aabb", "abbb")]
    metrics = [regs.metrics.get(m) for m in ("accuracy", "confusion_matrix")]
    text = render_eval(build_eval_result(records, "classification", metrics, hard_examples=0))
    assert "  Confusion matrix (rows: true, columns: predicted):\n       a  b\n    a  1  0\n    b  1  2" in text
    assert "Hard examples: none requested" in text
    from verifily_core.evaluation.render import fmt_interval
    from verifily_core.evaluation.result import MetricValue

    assert fmt_interval(MetricValue(0.5, 0.7012, 0.7049)) == "[0.701, 0.705]"


def hand_paired(a_vals, b_vals, key, seed=42, resamples=1000, level=0.95):
    a_vals, b_vals = np.asarray(a_vals, float), np.asarray(b_vals, float)
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")])
    idx = rng.integers(0, len(a_vals), size=(resamples, len(a_vals)))
    delta = b_vals[idx].mean(axis=1) - a_vals[idx].mean(axis=1)
    return tuple(np.percentile(delta, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def test_paired_bootstrap_delta_equals_hand_computation(regs):
    a = _records()
    b = [dict(r, prediction=r["reference"]) if r["tags"]["source"] == "human" else dict(r) for r in a]
    b = list(reversed(b))  # matched by row_id, not by order
    em_a = np.array([float(r["prediction"] == r["reference"]) for r in a])
    em_b = np.array([1.0 if r["tags"]["source"] == "human" else e for r, e in zip(a, em_a)])
    d = paired_bootstrap_delta(a, b, "exact_match", registries=regs)
    assert (d.n, d.value_a, d.value_b) == (40, pytest.approx(em_a.mean()), pytest.approx(em_b.mean()))
    assert d.delta == pytest.approx(em_b.mean() - em_a.mean())
    assert (d.ci_low, d.ci_high) == pytest.approx(hand_paired(em_a, em_b, "paired|exact_match|"), abs=1e-12)
    assert d.significant and d.ci_low > 0
    same = paired_bootstrap_delta(a, a, regs.metrics.get("token_f1"))
    assert (same.delta, same.ci_low, same.ci_high, same.significant) == (0.0, 0.0, 0.0, False)
    # a slice of the pairs, with its own random stream
    ai = paired_bootstrap_delta(a, b, "exact_match", registries=regs, key="source=ai_contaminated",
                                select=lambda ra, rb: ra["tags"]["source"] == "ai_contaminated")
    assert (ai.n, ai.delta, ai.significant) == (10, 0.0, False)
    assert metric_value(a, "exact_match", registries=regs) == pytest.approx(em_a.mean())
    with pytest.raises(EvalError, match="share no test rows"):
        paired_bootstrap_delta(a, [dict(r, row_id="sha256:other" + str(i)) for i, r in enumerate(a)], "loss",
                               registries=regs)


def test_paired_bootstrap_of_a_ratio_metric_resamples_rows_jointly(regs):
    a = _records()
    b = [dict(r, scores={"loss": r["scores"]["loss"] - 0.1, "n_tokens": 2}) for r in a]
    d = paired_bootstrap_delta(a, b, "loss", registries=regs)
    assert d.delta == pytest.approx(-0.1) and d.ci_low == pytest.approx(-0.1) and d.ci_high == pytest.approx(-0.1)
    assert d.significant and d.higher_is_better is False


def test_results_are_strict_json_whatever_a_plugin_returns(regs, tmp_path):
    from verifily_core.interfaces import Metric

    class Odd(Metric):
        name = "odd"

        def compute(self, predictions, references, rows, **kwargs):
            return {"nan": float("nan"), "array": np.arange(3), "scalar": np.float32(0.5), 1: "int key"}

    res = build_eval_result(_records(), "sft", [regs.metrics.get("loss"), Odd()], hard_examples=0)
    write_eval_files(res, tmp_path)
    text = (tmp_path / "eval_results.json").read_text()
    assert json.loads(text)["details"]["odd"] == {"nan": None, "array": [0, 1, 2], "scalar": 0.5, "1": "int key"}
    assert json.loads(json.dumps(res.to_json_dict(), allow_nan=False)) == json.loads(text)
