"""A third-party task gets what the built-ins get from its declarations alone: compare's
metric aliases and metric keywords, hard-example ranking, the main metrics of `verifily runs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifily_core import hookimpl
from verifily_core.api import list_runs
from verifily_core.commands.runs import _main_metrics
from verifily_core.interfaces import Metric, Task
from verifily_core.plugins import load_registries, make_plugin_manager
from verifily_core.testing import seal_run

SEEN_KWARGS: list[dict] = []


class Agreement(Metric):
    """Share of rows whose prediction equals the reference; records the keywords it received."""

    name = "agreement"
    tasks = ("yesno",)

    def compute(self, predictions, references, rows, **kwargs):
        SEEN_KWARGS.append(kwargs)
        return sum(p == r for p, r in zip(predictions, references)) / len(predictions) if predictions else None


class YesNoTask(Task):
    """Answers yes or no; its runs keep a ``vocab.json`` that metrics need."""

    name = "yesno"
    required_fields = ("question", "answer")
    reference_field = "answer"
    default_metrics = ("agreement",)
    main_metrics = ("agreement",)
    metric_aliases = {"f1": "agreement", "agree": "agreement"}
    hard_example_scores = ("doubt",)
    score_directions = {"doubt": False}

    def eval_metric_kwargs(self, run_path: Path) -> dict:
        return {"vocab": json.loads((Path(run_path) / "vocab.json").read_text())}


class YesNoPlugin:
    plugin_name = "yesno"

    @hookimpl
    def verifily_register_tasks(self, registry):
        registry.add(YesNoTask())

    @hookimpl
    def verifily_register_metrics(self, registry):
        registry.add(Agreement())


@pytest.fixture(scope="module")
def regs():
    return load_registries(make_plugin_manager(plugins=[YesNoPlugin()]))


REFS = ["yes", "no"] * 4


def yesno_run(root: Path, run_id: str, preds: list[str], regs) -> Path:
    """A completed, evaluated run of the yesno task, written by the real evaluation code."""
    from verifily_core.evaluation import build_eval_result, write_eval_files

    run = root / run_id
    run.mkdir(parents=True)
    meta = {"format_version": 1, "run_id": run_id, "name": None, "status": "completed", "task": "yesno",
            "base_model": "tiny", "dataset": {"ref": None}, "started_at": "2026-01-01T00:00:00Z",
            "completed_at": None, "duration_seconds": 1.0, "metrics": {"train_loss": 1.0}, "artifact_path": str(run),
            "error": None, "hashes": {"config_hash": "", "data_hash": "", "env_hash": "", "reproducibility_hash": ""}}
    (run / "run_meta.json").write_text(json.dumps(meta))
    (run / "vocab.json").write_text(json.dumps(["yes", "no"]))
    (run / "config.yaml").write_text("task: yesno\nbase_model: tiny\n")
    seal_run(run)
    records = [{"index": i, "row_id": f"sha256:r{i}", "prediction": p, "reference": r,
                "scores": {"doubt": i / 10}, "tags": {"source": "human" if i < 4 else "synthetic"}}
               for i, (p, r) in enumerate(zip(preds, REFS))]
    task = regs.tasks.get("yesno")
    result = build_eval_result(records, task, [regs.metrics.get("agreement")], slicers=regs.slicers,
                               slice_by=["source"], resamples=50, min_slice_size=1, hard_examples=3,
                               metric_kwargs=task.eval_metric_kwargs(run), run_id=run_id,
                               test_data={"path": "t.jsonl", "sha256": "sha256:t", "num_examples": len(preds)})
    write_eval_files(result, run / "eval", run_path=run)
    return run


def test_hard_examples_rank_by_the_tasks_declared_score(tmp_path, regs):
    run = yesno_run(tmp_path, "run_a", ["yes"] * 8, regs)
    doc = json.loads((run / "eval" / "eval_results.json").read_text())
    # "doubt" is no metric: the task names it and says higher is worse, so the most doubtful rows come first
    assert doc["hard_examples"]["score"] == "doubt" and doc["hard_examples"]["higher_is_better"] is False
    hard = [json.loads(line)["index"] for line in (run / "eval" / "hard_examples.jsonl").read_text().splitlines()]
    assert hard == [7, 6, 5]


@pytest.mark.parametrize("alias", ["main", "f1", "agree", "agreement"])
def test_compare_resolves_the_tasks_aliases_and_passes_its_metric_kwargs(tmp_path, regs, alias):
    from verifily_core.api import compare

    a = yesno_run(tmp_path, "run_a", ["yes"] * 8, regs)  # agreement 0.5
    b = yesno_run(tmp_path, "run_b", REFS[:6] + ["no", "no"], regs)  # 7 of 8
    SEEN_KWARGS.clear()
    result = compare([str(a), str(b)], metric=alias, slice_by="source", resamples=50, data_changes=False,
                     registries=regs)
    assert result.metric == "agreement"
    assert result.deltas["run_b"] == pytest.approx(0.875 - 0.5)
    assert result.slice_deltas["source=synthetic"]["run_b"] == pytest.approx(0.75 - 0.5)
    assert "overall" in result.intervals["run_b"]
    assert SEEN_KWARGS and all(kw.get("vocab") == ["yes", "no"] for kw in SEEN_KWARGS)


def test_an_unknown_alias_is_refused_naming_the_metrics(tmp_path, regs):
    from verifily_core.api import compare
    from verifily_core.errors import ConfigError

    a = yesno_run(tmp_path, "run_a", ["yes"] * 8, regs)
    b = yesno_run(tmp_path, "run_b", ["no"] * 8, regs)
    with pytest.raises(ConfigError, match="'token_f1' is not in the results of run_a; available in every run: "
                                          r"agreement \(--metric main is agreement\)$"):
        compare([str(a), str(b)], metric="token_f1", data_changes=False, registries=regs)


def test_runs_shows_the_tasks_main_metrics(tmp_path, regs):
    yesno_run(tmp_path, "run_a", ["yes"] * 8, regs)
    row = list_runs(tmp_path, registries=regs)[0]
    assert row["main_metrics"] == ["test_agreement"] and row["metrics"]["test_agreement"] == 0.5
    assert _main_metrics(row) == "train_loss=1.0000  test_agreement=0.5000"
    # without the task's plugin there is nothing to say about its test metrics
    assert _main_metrics(list_runs(tmp_path, registries=load_registries())[0]) == "train_loss=1.0000"
