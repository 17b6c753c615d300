"""README's main job: ./demo.sh runs end to end offline and tells the true story, for both tasks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verifily_core.plugins import load_registries

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCRIPT = ROOT / "examples" / "demo" / "demo.py"


def _load_demo():
    """``examples/demo/demo.py``, the demo's builder: a script beside demo.sh's configs, not an installed module."""
    spec = importlib.util.spec_from_file_location("verifily_demo", DEMO_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _demo(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(["bash", str(ROOT / "demo.sh"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("task, dataset, metric", [("sft", "ds_demo", "token_f1"),
                                                    ("classification", "ds_demo_cls", "macro_f1")])
def test_demo_runs_and_the_contaminated_slice_improves_from_v1_to_v2(task, dataset, metric, verifily_subprocess):
    res = _demo("--task", task)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for expected in ("Sliced by [source]", f"Comparison: {metric}", "Verdict: MATCH",
                     "Note: Slice metrics show correlation, not causation.", "95% CI of delta:"):
        assert expected in out
    cmp = json.loads((ROOT / ".verifily" / "demo" / f"compare-{task}.json").read_text())
    v1, v2 = cmp["runs"]
    assert cmp["metric"] == metric
    assert cmp["datasets"][v1] == f"{dataset}@v1" and cmp["datasets"][v2] == f"{dataset}@v2"
    slice_name = "source=ai_contaminated"
    assert cmp["slices"][slice_name][v1] < min(cmp["slices"]["source=human"][v1], cmp["slices"]["source=synthetic"][v1])
    assert cmp["slice_deltas"][slice_name][v2] > 0
    ci = cmp["intervals"][v2][slice_name]
    assert 0 < ci["ci_low"] <= ci["delta"] <= ci["ci_high"]  # the repair's gain is outside the noise
    # The printed story is the one in the file: the slice's delta and its interval, in points.
    assert "source=ai_contaminated slice improved" in out and f"{100 * ci['delta']:+.2f} points" in out
    assert "of hard examples are source=ai_contaminated" in out
    assert out.count("ai_contaminated ") >= 5  # the hard-example table of the v1 run
    if task == "sft":  # ranked by a 0/1 score, the planted slice still comes out, not the file's first rows
        run_v1 = ROOT / ".verifily" / "demo" / "runs" / v1
        out_dir = ROOT / ".verifily" / "demo" / "by-exact-match"
        res = verifily_subprocess("eval", "--run", str(run_v1), "--hard-by", "exact_match", "--output", str(out_dir))
        assert res.returncode == 0, res.stderr[-3000:]
        doc = json.loads((out_dir / "eval_results.json").read_text())
        assert doc["hard_examples"]["score"] == "exact_match" and doc["hard_examples"]["tie_break"]
        assert doc["hard_examples"]["over_represented"][0]["slice"] == slice_name
        hard = [json.loads(line) for line in (out_dir / "hard_examples.jsonl").read_text().splitlines()]
        assert [h["index"] for h in hard] != list(range(len(hard)))
        assert sum(h["tags"]["source"] == "ai_contaminated" for h in hard) > len(hard) // 2


def test_demo_rejects_an_unknown_task_with_exit_1():
    res = _demo("--task", "regression")
    assert res.returncode == 1
    assert "unknown task 'regression'" in res.stderr


def test_the_demo_builder_imports_no_heavy_library_and_is_not_in_the_package():
    probe = (f"import runpy, sys; runpy.run_path({str(DEMO_SCRIPT)!r}, run_name='verifily_demo')\n"
             "print(','.join(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
    assert importlib.util.find_spec("verifily_core.testing.demo") is None


@pytest.mark.parametrize("task", demo.TASKS)
def test_demo_data_breaks_only_the_contaminated_rows_of_v1(task):
    recipe = demo.RECIPES[task]
    v1, v2 = (recipe.rows(60, seed=1, contaminated=c) for c in (True, False))
    field = "output" if task == "sft" else "label"
    changed = [a["tags"]["source"] for a, b in zip(v1, v2) if a != b]
    assert changed and set(changed) == {"ai_contaminated"}
    assert all(a[field] != b[field] for a, b in zip(v1, v2) if a != b)
    inputs = [{k: v for k, v in r.items() if k != field} for r in v1]
    assert inputs == [{k: v for k, v in r.items() if k != field} for r in v2]  # same texts, other answers


def test_a_store_version_made_from_other_demo_data_is_refused(tmp_path, monkeypatch):
    """Dataset versions are immutable: the demo must not silently train on an older demo's rows."""
    from verifily_core.datasets.store import DatasetStore

    monkeypatch.setattr(demo, "build_tiny_model",  # the model is not what is tested
                        lambda kind, out, **kw: Path(out).mkdir(parents=True, exist_ok=True))
    paths = demo.prepare(tmp_path / "demo", "sft")
    store = tmp_path / "store"
    DatasetStore(store).create("ds_demo", "v1", "sft", {"train": paths["data"] / "v1" / "train.jsonl",
                                                        "test": paths["data"] / "test.jsonl"},
                               registries=load_registries())
    with pytest.raises(SystemExit, match=r"ds_demo@v1 in .*store hold data of an older demo; remove that store"):
        demo.prepare(tmp_path / "demo", "sft", store=store, dataset_id="ds_demo")
    fresh = tmp_path / "fresh"
    DatasetStore(fresh).create("ds_demo", "v1", "sft", {"train": paths["data"] / "v1" / "train.jsonl",
                                                        "val": paths["data"] / "v1" / "val.jsonl",
                                                        "test": paths["data"] / "test.jsonl"},
                               registries=load_registries())
    assert demo.prepare(tmp_path / "demo", "sft", store=fresh, dataset_id="ds_demo")["data"] == paths["data"]


def test_hard_examples_table_lists_source_input_reference_and_prediction(tmp_path):
    records = [{"tags": {"source": "ai_contaminated"}, "input": {"instruction": "Write the word in uppercase.",
                                                                 "input": "ocean"},
                "reference": "OCEAN", "prediction": "horse"},
               {"tags": {"source": "human"}, "input": {"text": "x " * 40}, "reference": "pos", "prediction": "neg"}]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "hard_examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = demo.hard_examples_table(tmp_path, n=5).splitlines()
    assert lines[0].split() == ["source", "input", "reference", "prediction"]
    assert lines[1].split() == ["ai_contaminated", "Write", "the", "word", "in", "uppercase.", "/", "ocean",
                                "OCEAN", "horse"]
    assert "..." in lines[2] and lines[2].split()[-2:] == ["pos", "neg"]
    assert len(demo.hard_examples_table(tmp_path, n=1).splitlines()) == 2
