"""The report's pieces without training: escaping of hostile values, the bars' values, the
confusion matrix from predictions, loss curves from train_log.jsonl, and the one-line errors of
`verifily report` and `verifily eval --plot`."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser

from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.comparison.result import CompareResult
from verifily_core.evaluation.result import MetricValue
from verifily_core.report.gather import ReportData, RunReport, confusion_matrix, loss_curves
from verifily_core.report.html import render_report

EVIL = "<script>alert('x')</script>"
EVIL_ATTR = '" onmouseover="alert(1)'


def _run(run_id: str, label: str, value: float) -> RunReport:
    slices = {f"source={EVIL}": {"n": 3, "small": True, "spec": "source",
                                 "metrics": {"f1": MetricValue(value, value - 0.1, value + 0.1, 3)}},
              f"source={EVIL_ATTR}": {"n": 2, "small": True, "spec": "source", "metrics": {"f1": MetricValue(None)}}}
    return RunReport(
        run_id=run_id, label=label, dataset=f"ds@{EVIL}", task="t", base_model=EVIL,
        metrics={"f1": MetricValue(value, value - 0.05, value + 0.05, 5)}, slices=slices,
        train_loss=[(1.0, 2.0), (2.0, 1.5)], val_loss=[(2.0, 1.7)],
        confusion={"labels": [EVIL, "b"], "columns": [EVIL, "b"], "matrix": [[2, 1], [0, 2]], "source": "x"},
        hard_examples=[{"score": 0.0, "tags": {"source": EVIL}, "input": {"text": EVIL}, "reference": EVIL,
                        "prediction": EVIL_ATTR}],
        hard_score="f1",
        attribution={"settings": {"target": EVIL, "method": "m", "train_rows": 2, "test_rows": 1},
                     "summary": [f"rows with source={EVIL}: harmful"],
                     "by_tag": {"source": {EVIL: {"rows": 1, "mean": -1.0, "low": -2.0, "high": 0.0, "sum": -1.0}}},
                     "harmful": [{"index": 0, "score": -1.0, "tags": {"source": EVIL}, "reference": EVIL}],
                     "helpful": [{"index": 1, "score": 1.0, "tags": {}, "reference": EVIL_ATTR}]},
        higher_is_better={"f1": True})


def _data() -> ReportData:
    a, b = _run("run_a", f"A{EVIL}", 0.5), _run("run_b", EVIL_ATTR, 0.75)
    names = list(a.slices)
    cmp = CompareResult(
        runs=["run_a", "run_b"], metric="f1", overall={"run_a": 0.5, "run_b": 0.75}, deltas={"run_a": 0.0, "run_b": 0.25},
        slices={n: {"run_a": 0.5, "run_b": 0.75} for n in names},
        slice_deltas={n: {"run_a": 0.0, "run_b": 0.25} for n in names},
        labels={"run_a": a.label, "run_b": b.label}, datasets={"run_a": a.dataset, "run_b": f"{EVIL}@v2"},
        intervals={"run_b": {"overall": {"delta": 0.25, "ci_low": 0.1, "ci_high": 0.4, "significant": True}}},
        data_changes={"run_b": {"from": a.dataset, "to": EVIL, "train": {"added": 1, "removed": 2, "changed": 3},
                                "by_tag": {f"source={EVIL}": {"added": 1, "removed": 0, "changed": 3, "retagged": 0}}}},
        interpretation=[f"{EVIL} improved"], warnings=[EVIL])
    return ReportData(runs=[a, b], metric="f1", slice_names=names, comparison=cmp)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def test_hostile_values_are_escaped_everywhere():
    page = render_report(_data())
    assert "<script" not in page.lower()
    parsed = Tags()
    parsed.feed(page)
    assert not [t for t, _ in parsed.tags if t == "script"]
    assert not [a for _, a in parsed.tags if any(k.startswith("on") for k in a)]  # no attribute was broken out of
    assert EVIL in parsed.text and EVIL_ATTR in parsed.text  # shown as text
    assert parsed.text.count(EVIL) >= 10


def test_one_bar_per_run_and_slice_with_its_values():
    parsed = Tags()
    parsed.feed(render_report(_data()))
    bars = {(a["data-run"], a["data-slice"]): a for t, a in parsed.tags if t == "rect" and a.get("class") == "bar"}
    # the slice whose value is undefined draws "n/a", not a bar
    assert set(bars) == {(r, s) for r in ("run_a", "run_b") for s in ("overall", f"source={EVIL}")}
    assert float(bars[("run_b", "overall")]["data-value"]) == 0.75
    assert float(bars[("run_b", f"source={EVIL}")]["data-ci-low"]) == 0.75 - 0.1
    assert bars[("run_a", "overall")]["data-n"] == "5"


def test_confusion_matrix_from_details_or_predictions():
    detail = {"labels": ["neg", "pos"], "columns": ["neg", "pos"], "matrix": [[3, 1], [0, 2]]}
    assert confusion_matrix({"cm": detail}, None)["matrix"] == [[3, 1], [0, 2]]
    records = [{"reference": "pos", "prediction": "pos"}, {"reference": "pos", "prediction": "neg"},
               {"reference": "neg", "prediction": "maybe"}, {"reference": "neg", "prediction": "neg", "gold": True}]
    cm = confusion_matrix({}, records)
    assert cm == {"labels": ["neg", "pos"], "columns": ["neg", "pos", "<other>"], "matrix": [[0, 0, 1], [1, 1, 0]],
                  "source": "predictions.jsonl"}
    assert confusion_matrix({}, None) is None


def test_loss_curves_read_train_and_validation_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_loss": 1.7},
             {"step": 2, "train_loss": 1.75}, {"step": 3, "loss": None}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert loss_curves(log) == ([(1.0, 2.0), (2.0, 1.5)], [(2.0, 1.7)])
    assert loss_curves(tmp_path / "absent.jsonl") == ([], [])


def test_report_of_a_path_that_is_no_run_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(cli, ["report", "--runs", f"{tmp_path / 'nope'},{tmp_path / 'nope2'}",
                                   "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("Error: ")
    assert not (tmp_path / "r.html").exists()


def test_eval_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = CliRunner().invoke(cli, ["eval", "--run", str(tmp_path / "any"), "--plot"])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: --plot needs matplotlib, which is not installed: "
                                  "pip install 'verifily-train[plots]'")


def test_plots_have_their_sizes_and_draw_dollar_signs_as_text(tmp_path):
    from PIL import Image

    from verifily_core.report.plots import LOSS_HEIGHT_PX, WIDTH_PX, slice_plot_height, write_eval_plots

    value = {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 4}
    doc = {"format_version": 1, "task": "t", "overall": {"n": 8, "metrics": {"f1": value, "odd/name": value}},
           "slices": {"source=$\\bogus{$": {"keys": ["source"], "spec": "source", "n": 4, "small": True,
                                      "metrics": {"f1": value, "odd/name": {"value": None}}}}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval_results.json").write_text(json.dumps(doc))
    (tmp_path / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n')
    written = write_eval_plots(tmp_path / "eval", tmp_path / "out", tmp_path)
    assert sorted(p.name for p in written) == ["loss.png", "slices_f1.png", "slices_odd_name.png"]
    for path in written:
        with Image.open(path) as image:
            image.load()
            assert image.size == (WIDTH_PX, LOSS_HEIGHT_PX if path.name == "loss.png" else slice_plot_height(2))
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no staging left
