"""`verifily attribute`: per-row gradients are the true gradients (projected), influence scores
follow their formula, and on a planted scenario (training rows with flipped labels) the planted
rows rank as harmful and their tag value stands out with an interval below zero; the scores
are sealed with the run."""

from __future__ import annotations

import json

import pytest
import torch

from verifily_core.attribution.gradients import ProjectedGradients, gradient_features, row_losses, row_margins
from verifily_core.attribution.scores import by_tag, influence
from verifily_core.testing import make_planted_keyword_rows, write_jsonl


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 5)
        self.b = torch.nn.Linear(5, 3, bias=False)

    def forward(self, x):
        return type("Out", (), {"logits": self.b(torch.tanh(self.a(x)))})()


def _exact(model, x, y):
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]).logits, y[i:i + 1]).backward()
        grads.append(torch.cat([model.a.weight.grad.flatten(), model.a.bias.grad, model.b.weight.grad.flatten()]))
    return torch.stack(grads)


def test_unprojected_features_are_each_rows_exact_gradient():
    model = _Tiny()
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    with ProjectedGradients(model, k=16) as grads:  # every side <= 16: nothing is projected
        model.zero_grad()
        feats = grads.features(row_losses(model, {"x": x, "labels": y}))
    exact = _exact(model, x, y)
    # the features hold (out x in) blocks as g x^T; the exact gradients the same blocks, so compare the sets
    assert feats.shape == exact.shape == (7, grads.dim)
    assert torch.allclose(torch.sort(feats.abs(), 1).values, torch.sort(exact.abs(), 1).values, atol=1e-6)
    assert torch.allclose(feats @ feats.T, exact @ exact.T, atol=1e-5)


class _Pooled(torch.nn.Module):
    """Token embeddings, mean-pooled over the attention mask, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 6)
        self.emb.weight.requires_grad_(False)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask[..., None].float()
        pooled = (self.emb(input_ids) * mask).sum(1) / mask.sum(1)
        return type("Out", (), {"logits": self.head(pooled)})()


def _pad(rows):
    longest = max(len(r["input_ids"]) for r in rows)
    return {"input_ids": torch.tensor([r["input_ids"] + [0] * (longest - len(r["input_ids"])) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"]))
                                            for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows])}


def test_row_gradients_do_not_depend_on_how_rows_are_batched():
    """Batches by length or by token budget give each row, in input order, its gradient alone."""
    gen = torch.Generator().manual_seed(2)
    feats = [{"input_ids": torch.randint(1, 20, (n,), generator=gen).tolist(), "labels": i % 3}
             for i, n in enumerate([3, 9, 1, 5, 9, 2, 7, 4, 6, 8, 1])]
    model = _Pooled()
    alone = torch.cat([gradient_features(model, [f], _pad, 1, "cpu") for f in feats])
    for kwargs in ({"batch_size": 1}, {"batch_size": 4}, {"batch_size": 1, "max_tokens": 18}):
        batched = gradient_features(model, feats, _pad, device="cpu", **kwargs)
        assert torch.allclose(batched, alone, atol=1e-6), kwargs
    assert alone.abs().sum(1).min() > 0  # every row has a gradient, each in its own place


def test_projected_inner_products_estimate_the_true_ones():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48))
    for p in model.parameters():
        p.requires_grad_(True)
    wrapped = type("M", (torch.nn.Module,), {"forward": lambda self, x: type("O", (), {"logits": self.m(x)})()})()
    wrapped.m = model
    x, y = torch.randn(40, 64), torch.randint(0, 48, (40,))
    with ProjectedGradients(wrapped, k=32, seed=3) as grads:
        feats = grads.features(row_losses(wrapped, {"x": x, "labels": y}))
    exact = []
    for i in range(40):
        wrapped.zero_grad()
        torch.nn.functional.cross_entropy(wrapped(x[i:i + 1]).logits, y[i:i + 1]).backward()
        exact.append(torch.cat([model[0].weight.grad.flatten(), model[0].bias.grad]))
    exact = torch.stack(exact)
    a, b = (feats @ feats.T).flatten(), (exact @ exact.T).flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9


def test_influence_is_its_formula_in_both_forms():
    torch.manual_seed(2)
    phi, psi = torch.randn(30, 8), torch.randn(5, 8)
    n, g = 30, psi.double().mean(0)
    p = phi.double()
    lam = 0.1 * float((p ** 2).sum()) / (30 * 8)
    expected = p @ torch.linalg.solve(p.T @ p / n + lam * torch.eye(8, dtype=p.dtype), g)
    assert torch.allclose(influence(phi, psi, 0.1).double(), expected, atol=1e-5)
    wide, wide_test = torch.randn(20, 5000), torch.randn(4, 5000)  # D > N and > 4096: the Woodbury form
    p, g = wide.double(), wide_test.double().mean(0)
    lam = 0.1 * float((p ** 2).sum()) / (20 * 5000)
    direct = p @ torch.linalg.solve(p.T @ p / 20 + lam * torch.eye(5000, dtype=p.dtype), g)
    assert torch.allclose(influence(wide, wide_test, 0.1).double(), direct, rtol=1e-4, atol=1e-6)


def test_margins_are_the_negative_log_odds_of_the_reference():
    model = _Tiny()
    x, y = torch.randn(5, 6), torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        p = torch.softmax(model(x).logits, -1)[torch.arange(5), y].double()
        assert torch.allclose(row_margins(model, {"x": x, "labels": y}).double(), -torch.log(p / (1 - p)), atol=1e-5)
        assert torch.allclose(row_losses(model, {"x": x, "labels": y}).double(), -torch.log(p), atol=1e-5)
        sets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        logits = model(x).logits.double()
        q = torch.where(sets.bool(), torch.sigmoid(logits), 1 - torch.sigmoid(logits))  # each yes/no right
        assert torch.allclose(row_margins(model, {"x": x, "labels": sets}).double(),
                              -torch.log(q / (1 - q)).mean(1), atol=1e-5)


def test_per_tag_means_and_intervals():
    out = by_tag([-2.0, -1.0, 1.0, 2.0, 3.0], [{"s": "a"}, {"s": "a"}, {"s": "b"}, {"s": "b"}, {"s": "b"}],
                 resamples=200)
    assert out["s"]["a"]["mean"] == -1.5 and out["s"]["b"]["mean"] == 2.0 and out["s"]["a"]["rows"] == 2
    assert -2.0 <= out["s"]["a"]["low"] <= -1.5 <= out["s"]["a"]["high"] <= -1.0


PLANTED = 16
HURT = "keyword=great"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A classifier trained on 96 clean rows plus 16 rows tagged source=web that use the word
    'great' but are labelled neg; the test slice keyword=great (24 + ~10 rows) is what they hurt."""
    from verifily_core.api import train
    from verifily_core.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("attribution")
    model = build_tiny_model("bert", root / "bert", pretrain_steps=150)
    train_rows, test_rows = make_planted_keyword_rows(seed=0, planted=PLANTED)
    write_jsonl(root / "train.jsonl", train_rows)
    write_jsonl(root / "test.jsonl", test_rows)
    cfg = {"task": "classification", "base_model": str(model),
           "data_paths": {"train": str(root / "train.jsonl"), "test": str(root / "test.jsonl")},
           "training": {"num_epochs": 20, "batch_size": 16, "gradient_accumulation_steps": 1, "learning_rate": 0.005,
                        "logging_steps": 8, "save_steps": 1000, "max_seq_length": 32, "warmup_ratio": 0.0,
                        "attribution_checkpoints": 3},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "eval": {"bootstrap_resamples": 50},
           "data_checks": {"leakage": "off"}, "output": {"dir": str(root / "runs")}}
    return train(cfg).path


@pytest.mark.slow
def test_planted_rows_rank_as_harmful_and_their_tag_stands_out(planted, verifily_cli):
    res = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--method", "final", "--top", str(PLANTED),
                       "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["method"].startswith("influence at the final model")
    web = doc["by_tag"]["source"]["web"]
    assert web["rows"] == PLANTED and web["high"] < 0  # the interval excludes zero
    assert web["mean"] == min(v["mean"] for v in doc["by_tag"]["source"].values())
    hits = sum(r["tags"]["source"] == "web" for r in doc["most_harmful"])
    # precision at K = 16: 16 of 112 rows are planted (a random ranking finds 2.3 of them); measured 13
    assert hits / PLANTED >= 0.8, doc["most_harmful"]
    assert any("source=web" in line and "excludes zero" in line for line in doc["summary"])
    assert doc["objective"] == "margin" and doc["target"] == HURT
    rows = [json.loads(line) for line in (planted / "eval" / "attribution" / "row_scores.jsonl").read_text().splitlines()]
    assert len(rows) == 112 and {r["index"] for r in rows} == set(range(112))
    table = verifily_cli("attribute", "--run", planted, "--slice", "source=human", "--top", "3")
    assert table.exit_code == 0 and "Most harmful rows:" in table.output and "source=human" in table.output


@pytest.mark.slow
def test_validate_retrains_without_the_harmful_rows_and_the_slice_improves(planted, verifily_cli, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(tmp_path / "store"))
    res = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--validate", str(PLANTED), "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    check = doc["validation"]
    worst = [json.loads(line) for line in
             (planted / "eval" / "attribution" / "row_scores.jsonl").read_text().splitlines()]
    removed = sorted(r["index"] for r in sorted(worst, key=lambda r: r["score"])[:PLANTED])
    assert check["removed"] == removed and check["k"] == PLANTED
    target = check["target"]
    assert target["slice"] == HURT and target["delta"] > 0 and target["significant"] and target["ci_low"] > 0
    # the derived dataset version records what it came from and what was removed
    manifest = next((tmp_path / "store").glob("local/*/manifest.json"))
    origin = json.loads(manifest.read_text())["derived_from"]
    assert origin["removed"] == {"train": removed} and origin["removed_rows"] == PLANTED
    new_run = planted.parent / check["run_id"]
    meta = json.loads((new_run / "run_meta.json").read_text())
    assert meta["status"] == "completed" and meta["dataset"]["ref"] == check["dataset"]
    assert meta["metrics"]["train_rows"] == 112 - PLANTED
    assert verifily_cli("reproduce", "--run", new_run, "--verify-only").exit_code == 0
    again = json.loads(verifily_cli("attribute", "--run", planted, "--slice", HURT, "--validate", str(PLANTED),
                                    "--format", "json").stdout)["validation"]
    assert again["reused"] and again["run_id"] == check["run_id"] and again["target"] == target
    saved = json.loads((planted / "eval" / "attribution" / "validate.json").read_text())
    assert saved["target"] == target
    assert verifily_cli("reproduce", "--run", planted, "--verify-only").exit_code == 0


@pytest.mark.slow
def test_leave_out_of_the_planted_value_helps_the_hurt_slice_most(planted, verifily_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(tmp_path / "store"))
    res = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--leave-out", "source", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [v["value"] for v in doc["variants"]] == ["ai_contaminated", "human", "synthetic", "web"]
    on_hurt = {v["value"]: next(o for o in v["slices"] if o["slice"] == HURT) for v in doc["variants"]}
    best = max(on_hurt, key=lambda value: on_hurt[value]["delta"])
    assert best == "web" and on_hurt["web"]["significant"] and on_hurt["web"]["ci_low"] > 0
    assert {v["value"]: v["removed_rows"] for v in doc["variants"]} == {"ai_contaminated": 32, "human": 32,
                                                                       "synthetic": 32, "web": 16}
    # resumable: a second call reuses every finished variant
    table = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--leave-out", "source", "--values", "web")
    assert table.exit_code == 0 and "reused" in table.output and f"{HURT}" in table.output
    bad = verifily_cli("attribute", "--run", planted, "--leave-out", "source", "--values", "forum")
    assert bad.exit_code == 1 and "source=forum carried by no training row" in bad.output
    # the report shows the checks: one row per variant and slice shown, with the deltas of leave_out.json
    page = tmp_path / "report.html"
    assert verifily_cli("report", "--runs", planted, "--out", page).exit_code == 0
    html = page.read_text()
    table = html[html.index('<table class="checks">'):].split("</table>")[0]
    web = on_hurt["web"]
    assert "source=web left out" in table and f"{web['delta']:+.4f}" in table
    assert f"[{web['ci_low']:+.4f}, {web['ci_high']:+.4f}]" in table


@pytest.mark.slow
def test_leave_out_on_a_budget_trains_variants_in_parallel_processes(planted, verifily_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(tmp_path / "store"))
    res = verifily_cli("attribute", "--run", planted, "--leave-out", "source", "--values", "human,web",
                       "--max-steps", "30", "--jobs", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["max_steps"] == 30 and doc["baseline"] != planted.name  # the full data on the same budget
    runs = {name: planted.parent / name for name in [doc["baseline"], *(v["run_id"] for v in doc["variants"])]}
    metas = {name: json.loads((path / "run_meta.json").read_text()) for name, path in runs.items()}
    assert all(m["status"] == "completed" and m["metrics"]["train_steps"] == 30 for m in metas.values())
    assert metas[doc["baseline"]]["metrics"]["train_rows"] == 112
    assert [metas[v["run_id"]]["metrics"]["train_rows"] for v in doc["variants"]] == [80, 96]
    # the deltas are verifily compare's, against the budget baseline
    web = doc["variants"][1]
    compared = json.loads(verifily_cli("compare", "--runs", f"{runs[doc['baseline']]},{runs[web['run_id']]}",
                                       "--metric", "main", "--slice-by", "source", "--format", "json").stdout)
    overall = next(o for o in web["slices"] if o["slice"] == "overall")
    assert overall["delta"] == pytest.approx(compared["deltas"][web["run_id"]])


@pytest.mark.slow
def test_tracin_uses_the_snapshots_the_run_kept(planted, verifily_cli):
    index = json.loads((planted / "snapshots" / "snapshots.json").read_text())
    assert [e["step"] for e in index] == [47, 93, 140] and all(e["lr"] > 0 for e in index)
    hashed = json.loads((planted / "hashes.json").read_text())["artifacts"]
    assert all(f"snapshots/{e['file']}" in hashed for e in index)
    res = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--method", "tracin", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["snapshots"] == [47, 93, 140] and doc["method"].startswith("TracIn")
    web = doc["by_tag"]["source"]["web"]
    assert web["high"] < 0 and web["mean"] == min(v["mean"] for v in doc["by_tag"]["source"].values())


@pytest.mark.slow
def test_the_ensemble_over_snapshots_ranks_the_planted_rows(planted, verifily_cli):
    # the default (auto) for a run that kept snapshots
    res = verifily_cli("attribute", "--run", planted, "--slice", HURT, "--top", str(PLANTED), "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["snapshots"] == [47, 93, 140] and doc["method"].startswith("influence averaged")
    hits = sum(r["tags"]["source"] == "web" for r in doc["most_harmful"])
    assert hits / PLANTED >= 0.8, doc["most_harmful"]  # measured 15 of 16
    web = doc["by_tag"]["source"]["web"]
    assert web["high"] < 0 and web["mean"] == min(v["mean"] for v in doc["by_tag"]["source"].values())


@pytest.mark.slow
def test_attribution_files_are_sealed_and_bad_requests_are_one_line(planted, verifily_cli, tmp_path):
    assert verifily_cli("reproduce", "--run", planted, "--verify-only").exit_code == 0
    res = verifily_cli("attribute", "--run", planted, "--slice", "source")
    assert res.exit_code == 1 and "write TAG=VALUE" in res.output
    res = verifily_cli("attribute", "--run", planted, "--slice", "source=nowhere")
    assert res.exit_code == 2 and "no test row has the tag source=nowhere" in res.output
    scores = planted / "eval" / "attribution" / "row_scores.jsonl"
    scores.write_text(scores.read_text().replace('"score": -', '"score": ', 1))
    verify = verifily_cli("reproduce", "--run", planted, "--verify-only")
    assert verify.exit_code != 0 and "attribution/row_scores.jsonl" in verify.output
