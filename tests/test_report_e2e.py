"""`verifily report` on two real tiny runs trained on v1 and v2 of a dataset, rendered by headless
Chromium: the page draws (a screenshot with content), logs no console error, holds exactly one
bar per slice per run with the values of each run's eval_results.json, shows the training-data
diff and attribution, and shows a hostile row as text. `verifily eval --plot` on the same runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.plugins import load_registries
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow

HOSTILE_TEXT = "<script>document.title='pwned'</script>"
HOSTILE_TAG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, verifily_tiny_llama_dir):
    """Two evaluated runs (ds@v1 with corrupted ai_contaminated outputs, ds@v2 repaired) whose test
    split holds a row with markup in its instruction, output and a tag value; v2 is attributed."""
    from verifily_core.datasets import DatasetStore

    root = tmp_path_factory.mktemp("report")
    store = DatasetStore(root / "store")
    test_rows = make_sft_rows(8, seed=3) + [{"instruction": f"Repeat {HOSTILE_TEXT} & \"this\".", "input": "apple",
                                             "output": HOSTILE_TEXT, "tags": {"source": HOSTILE_TAG}}]
    test = write_jsonl(root / "test.jsonl", test_rows)
    v1 = make_sft_rows(24, seed=1, corrupt_source="ai_contaminated")
    v2 = make_sft_rows(24, seed=1)
    for version, rows in (("v1", v1), ("v2", v2)):
        store.create("ds", version, "sft", {"train": write_jsonl(root / f"{version}.jsonl", rows),
                                            "val": write_jsonl(root / f"val-{version}.jsonl", rows[:6]), "test": test},
                     registries=load_registries())
    out = []
    for version in ("v1", "v2"):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "dataset_version": f"ds@{version}",
               "dataset_store": str(root / "store"), "data_checks": {"leakage": "off"},
               "training": {"max_steps": 6, "batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 48,
                            "learning_rate": 0.02, "logging_steps": 1, "eval_steps": 3},
               "lora": {"r": 4, "alpha": 8},
               "eval": {"metrics": ["token_f1", "loss"], "slice_by_tags": ["source"], "max_new_tokens": 6,
                        "bootstrap_resamples": 50, "min_slice_size": 1, "hard_examples": 20},
               "output": {"dir": str(root / "runs"), "name": f"on-{version}"}}
        (root / f"{version}.yaml").write_text(yaml.safe_dump(cfg))
        res = CliRunner().invoke(cli, ["train", "--config", str(root / f"{version}.yaml")])
        assert res.exit_code == 0, res.output
        out.append(next(p for p in (root / "runs").iterdir() if json.loads((p / "run_meta.json").read_text())["name"]
                        == f"on-{version}"))
    res = CliRunner().invoke(cli, ["attribute", "--run", str(out[1]), "--projection", "4"])
    assert res.exit_code == 0, res.output
    return out, root


@pytest.fixture(scope="module")
def report(runs):
    (a, b), root = runs
    path = root / "report.html"
    res = CliRunner().invoke(cli, ["report", "--runs", f"{a},{b}", "--slice-by", "source", "--out", str(path),
                                   "--resamples", "50"])
    assert res.exit_code == 0, res.output
    assert path.is_file()
    return path


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; scripts/setup.sh does it as root)")
    return found


def run_chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` with console messages logged to stderr."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """The page's console messages (the report has no script: any message is an error)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a serialized DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)


def dom_of(page: Path, tmp_path: Path) -> tuple[Elements, str, list[str]]:
    res = run_chromium(page, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    parsed = Elements()
    parsed.feed(res.stdout)
    return parsed, res.stdout, console_errors(res.stderr)


def test_the_console_check_catches_a_script_error(tmp_path):
    """The check below can fail: a page with a deliberate error is caught, a clean one is not."""
    bad, good = tmp_path / "bad.html", tmp_path / "good.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>notDefinedAnywhere();</script>")
    good.write_text("<!DOCTYPE html><p>x</p>")
    assert any("notDefinedAnywhere" in line for line in dom_of(bad, tmp_path)[2])
    assert dom_of(good, tmp_path)[2] == []


def test_the_report_renders_in_chromium_with_a_bar_per_slice_per_run(runs, report, tmp_path):
    (a, b), _ = runs
    shot = tmp_path / "report.png"
    res = run_chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_errors(res.stderr) == []
    from PIL import Image, ImageStat

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        stddev = ImageStat.Stat(image.convert("L")).stddev[0]
    assert stddev > 10, f"the screenshot looks blank (pixel stddev {stddev:.1f})"

    dom, raw, errors = dom_of(report, tmp_path)
    assert errors == []
    bars = [attrs for tag, attrs in dom.tags if tag == "rect" and "bar" in attrs.get("class", "").split()]
    expected = {}
    for run in (a, b):
        doc = json.loads((run / "eval" / "eval_results.json").read_text())
        expected[(run.name, "overall")] = doc["overall"]["metrics"]["token_f1"]
        for name, block in doc["slices"].items():
            expected[(run.name, name)] = block["metrics"]["token_f1"]
    assert (a.name, f"source={HOSTILE_TAG}") in expected
    assert len(bars) == len(expected)  # exactly one bar per slice (and overall) per run
    seen = {(bar["data-run"], bar["data-slice"]): bar for bar in bars}
    assert set(seen) == set(expected)
    for key, metric in expected.items():
        bar = seen[key]
        assert bar["data-metric"] == "token_f1"
        assert float(bar["data-value"]) == metric["value"]
        assert float(bar["data-ci-low"]) == metric["ci_low"] and float(bar["data-ci-high"]) == metric["ci_high"]
        assert int(bar["data-n"]) == metric["n"]
    # self-contained: no element that loads anything, no script
    assert not [t for t, _ in dom.tags if t in ("script", "img", "link", "iframe", "object", "embed")]
    assert not [attrs for _, attrs in dom.tags if attrs.get("src") or attrs.get("href", "#").startswith(("http", "//"))]


def test_the_report_shows_the_data_diff_loss_curves_and_attribution(runs, report):
    (a, b), _ = runs
    text = report.read_text()
    cmp = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{b}", "--slice-by", "source", "--format", "json",
                                   "--resamples", "50"])
    changes = json.loads(cmp.stdout)["data_changes"][b.name]
    ai = changes["by_tag"]["source=ai_contaminated"]
    assert ai["changed"] > 0
    assert (f'<tr><td>source=ai_contaminated</td><td class="num">{ai["added"]}</td><td class="num">{ai["removed"]}'
            f'</td><td class="num">{ai["changed"]}</td>') in text
    assert f'+{changes["train"]["added"]}/-{changes["train"]["removed"]}/~{changes["train"]["changed"]}' in text
    deltas = json.loads(cmp.stdout)["deltas"]
    assert f"{deltas[b.name]:+.4f}" in text  # the delta compare computes
    assert text.count('<polyline class="curve"') == 4  # train and val loss of both runs
    summary = json.loads((b / "eval" / "attribution" / "attribution.json").read_text())["summary"]
    assert summary and all(line.replace("'", "&#x27;") in text for line in summary)
    assert 'id="attribution"' in text


def test_a_hostile_row_shows_as_text(runs, report, tmp_path):
    dom, raw, _ = dom_of(report, tmp_path)
    assert "<script" not in raw and "<img" not in raw
    shown = "".join(dom.text)
    assert HOSTILE_TEXT in shown  # the row's output, shown as text in the hard examples
    assert f"source={HOSTILE_TAG}" in shown
    assert not [t for t, _ in dom.tags if t in ("script", "img")]


def test_eval_plot_writes_pngs_into_the_sealed_eval_folder(runs, tmp_path):
    from PIL import Image

    from verifily_core.evaluation.seal import check_eval
    from verifily_core.report.plots import LOSS_HEIGHT_PX, WIDTH_PX, slice_plot_height

    (a, _), _ = runs
    res = CliRunner().invoke(cli, ["eval", "--run", str(a), "--plot"])
    assert res.exit_code == 0, res.output
    plots = a / "eval" / "plots"
    doc = json.loads((a / "eval" / "eval_results.json").read_text())
    groups = 1 + len(doc["slices"])
    assert sorted(p.name for p in plots.iterdir()) == ["loss.png", "slices_loss.png", "slices_token_f1.png"]
    for name, size in (("loss.png", (WIDTH_PX, LOSS_HEIGHT_PX)),
                       ("slices_token_f1.png", (WIDTH_PX, slice_plot_height(groups)))):
        with Image.open(plots / name) as image:
            image.load()
            assert image.size == size
    count, problems = check_eval(a / "eval", a)
    assert problems == [] and count == len(doc["files"]) + 1 + 3  # results, predictions..., and the plots
    # evaluating again without --plot removes the plots drawn from the old numbers, and still verifies
    res = CliRunner().invoke(cli, ["eval", "--run", str(a)])
    assert res.exit_code == 0, res.output
    assert not plots.exists() and check_eval(a / "eval", a)[1] == []


def test_eval_plot_into_a_folder_outside_the_run(runs, tmp_path):
    (_, b), _ = runs
    res = CliRunner().invoke(cli, ["eval", "--run", str(b), "--plot", str(tmp_path / "pics")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "pics").iterdir()} >= {"loss.png", "slices_token_f1.png"}
    assert not (b / "eval" / "plots").exists()


def test_a_report_of_one_run_has_no_deltas(runs, tmp_path):
    (a, _), _ = runs
    path = tmp_path / "one.html"
    res = CliRunner().invoke(cli, ["report", "--runs", str(a), "--out", str(path), "--metric", "loss"])
    assert res.exit_code == 0, res.output
    text = path.read_text()
    assert 'id="slices"' in text and 'id="deltas"' not in text and 'id="data"' not in text
    doc = json.loads((a / "eval" / "eval_results.json").read_text())
    assert f'data-metric="loss" data-value="{doc["overall"]["metrics"]["loss"]["value"]!r}"' in text


def test_bad_report_input_is_one_line_with_its_exit_code(runs, tmp_path):
    (a, b), _ = runs
    cases = [(["--metric", "bleuu"], 1, "--metric bleuu"), (["--slice-by", "colour"], 1, "--slice-by colour"),
             (["--out", str(tmp_path / "missing" / "r.html")], 1, str(tmp_path / "missing")),
             (["--runs", f"{a},{a}"], 1, "given twice")]
    for extra, code, named in cases:
        args = ["report", "--runs", f"{a},{b}", "--out", str(tmp_path / "r.html"), *extra]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == code, (extra, res.output)
        assert len(res.output.strip().splitlines()) == 1 and named in res.output, (extra, res.output)
    assert not (tmp_path / "r.html").exists()


def test_a_run_whose_results_were_edited_is_refused_with_exit_4(runs, tmp_path):
    (a, b), _ = runs
    copy = tmp_path / a.name
    shutil.copytree(a, copy)
    results = copy / "eval" / "eval_results.json"
    doc = json.loads(results.read_text())
    doc["overall"]["metrics"]["token_f1"]["value"] = 0.99
    results.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["report", "--runs", f"{copy},{b}", "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 4, res.output
    assert len(res.output.strip().splitlines()) == 1 and "does not verify" in res.output
    assert not (tmp_path / "r.html").exists()


def test_a_full_disk_while_sealing_the_plots_leaves_a_verifying_evaluation(runs, monkeypatch):
    import errno

    from verifily_core.evaluation import seal
    from verifily_core.evaluation.seal import check_eval

    (a, _), _ = runs

    def full(eval_dir, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(eval_dir / seal.SEAL_FILE))

    monkeypatch.setattr(seal, "seal_eval", full)  # the seal after the plots; the evaluation's own is written before
    res = CliRunner().invoke(cli, ["eval", "--run", str(a), "--plot"])
    assert res.exit_code == 4, res.output
    assert res.output.strip().splitlines()[-1].startswith(f"Error: {a / 'eval' / seal.SEAL_FILE}: no space left")
    assert not (a / "eval" / "plots").exists()
    assert check_eval(a / "eval", a)[1] == []


def test_a_classification_run_gets_its_confusion_matrix_from_the_predictions(tmp_path, verifily_tiny_bert_dir):
    """Evaluated without the confusion-matrix metric, the report counts it from predictions.jsonl."""
    from collections import Counter

    from verifily_core.api import train
    from verifily_core.testing import make_classification_rows

    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", make_classification_rows(n, seed=s)))
            for split, n, s in (("train", 32, 1), ("test", 16, 3))}
    run = train({"task": "classification", "base_model": str(verifily_tiny_bert_dir), "data_paths": data,
                 "training": {"max_steps": 3, "batch_size": 16, "max_seq_length": 24, "learning_rate": 0.01},
                 "lora": {"r": 4, "alpha": 8}, "data_checks": {"leakage": "off"},
                 "eval": {"metrics": ["accuracy", "macro_f1"], "slice_by_tags": ["source"], "bootstrap_resamples": 20,
                          "min_slice_size": 1},
                 "output": {"dir": str(tmp_path / "runs")}})
    res = CliRunner().invoke(cli, ["report", "--runs", str(run.path), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    parsed = Elements()
    parsed.feed((tmp_path / "r.html").read_text())
    text = "".join(parsed.text)
    assert "(from predictions.jsonl)" in text
    preds = [json.loads(line) for line in (run.path / "eval" / "predictions.jsonl").read_text().splitlines()]
    counts = Counter((p["reference"], p["prediction"]) for p in preds)
    page = (tmp_path / "r.html").read_text()
    table = page[page.index('<table class="confusion">'):]
    table = table[:table.index("</table>")]
    labels = sorted({p["reference"] for p in preds})
    for label in labels:
        row = table[table.index(f"<tr><th>{label}</th>"):]
        row = row[:row.index("</tr>")]
        cells = [int(c.split(">")[-1]) for c in row.split("</td>")[:-1]]
        assert cells[:len(labels)] == [counts[(label, p)] for p in labels]
    assert sum(counts.values()) == len(preds) == 16
