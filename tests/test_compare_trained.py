"""`verifily compare` on two real tiny runs trained on v1 and v2 of a dataset: the deltas per
slice equal the ones computed by hand from the runs' predictions, and the data changes from the rows."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import yaml
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.plugins import load_registries
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, verifily_tiny_llama_dir):
    from verifily_core.datasets import DatasetStore

    root = tmp_path_factory.mktemp("cmp")
    store = DatasetStore(root / "store")
    test = write_jsonl(root / "test.jsonl", make_sft_rows(12, seed=3))
    v1 = make_sft_rows(24, seed=1, corrupt_source="ai_contaminated")
    v2 = make_sft_rows(24, seed=1)
    for version, rows in (("v1", v1), ("v2", v2)):
        store.create("ds", version, "sft", {"train": write_jsonl(root / f"{version}.jsonl", rows), "test": test},
                     registries=load_registries())
    out = []
    for version in ("v1", "v2"):
        cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "dataset_version": f"ds@{version}",
               "dataset_store": str(root / "store"), "data_checks": {"leakage": "off"},
               "training": {"max_steps": 4, "batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 48,
                            "learning_rate": 0.02},
               "lora": {"r": 4, "alpha": 8},
               "eval": {"metrics": ["token_f1", "loss"], "slice_by_tags": ["source"], "max_new_tokens": 6,
                        "bootstrap_resamples": 50, "min_slice_size": 1, "hard_examples": 2},
               "output": {"dir": str(root / "runs"), "name": f"on-{version}"}}
        (root / f"{version}.yaml").write_text(yaml.safe_dump(cfg))
        res = CliRunner().invoke(cli, ["train", "--config", str(root / f"{version}.yaml")])
        assert res.exit_code == 0, res.output
        out.append(next(p for p in (root / "runs").iterdir() if json.loads((p / "run_meta.json").read_text())["name"]
                        == f"on-{version}"))
    return out, v1


def slice_means(run, metric):
    """Per-slice values from predictions.jsonl: token_f1 is a mean over rows, loss is token-weighted."""
    sums, weights = defaultdict(float), defaultdict(float)
    for line in (run / "eval" / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        w = rec["scores"].get("n_tokens", 1) if metric == "loss" else 1
        for key in ("overall", f"source={rec['tags']['source']}"):
            sums[key] += rec["scores"][metric] * w
            weights[key] += w
    return {k: sums[k] / weights[k] for k in sums}


@pytest.mark.parametrize("metric", ["token_f1", "loss"])
def test_deltas_per_slice_match_the_predictions(runs, metric):
    (a, b), _ = runs
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{b}", "--metric", metric, "--slice-by", "source",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    ma, mb = slice_means(a, metric), slice_means(b, metric)
    assert d["same_test_set"] is True and set(d["slices"]) == set(ma) - {"overall"}
    assert d["deltas"][b.name] == pytest.approx(mb["overall"] - ma["overall"], abs=1e-9)
    for name in d["slices"]:
        assert d["slice_deltas"][name][b.name] == pytest.approx(mb[name] - ma[name], abs=1e-9)
        assert d["intervals"][b.name][name]["delta"] == pytest.approx(mb[name] - ma[name], abs=1e-9)
    assert d["intervals"][b.name]["overall"]["delta"] == pytest.approx(d["deltas"][b.name], abs=1e-9)


def test_data_changes_are_the_corrupted_rows(runs):
    (a, b), v1 = runs
    res = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{b}", "--slice-by", "source", "--format", "json"])
    changes = json.loads(res.stdout)["data_changes"][b.name]
    ai_rows = sum(r["tags"]["source"] == "ai_contaminated" for r in v1)
    assert changes["train"] == {"added": 0, "removed": 0, "changed": ai_rows, "retagged": 0}
    assert changes["by_tag"]["source=ai_contaminated"]["changed"] == ai_rows
    assert "source=human" not in changes["by_tag"]
    table = CliRunner().invoke(cli, ["compare", "--runs", f"{a},{b}", "--slice-by", "source"]).output
    assert f"source=ai_contaminated: training rows {ai_rows} changed (ds@v1 -> ds@v2)" in table
