"""`verifily export`: a run's adapter, or its merged standalone model whose logits equal the
base with the adapter."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_sft_rows, train_run, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, verifily_tiny_llama_dir):
    root = tmp_path_factory.mktemp("export")
    write_jsonl(root / "train.jsonl", make_sft_rows(16, seed=1))
    cfg = {"task": "sft", "base_model": str(verifily_tiny_llama_dir), "data_paths": {"train": str(root / "train.jsonl")},
           "training": {"max_steps": 3, "batch_size": 8, "max_seq_length": 48, "learning_rate": 0.05},
           "lora": {"r": 4, "alpha": 8}, "eval": {"enabled": False}, "output": {"dir": str(root / "runs")}}
    return train_run(cfg, root)


def test_a_merged_export_gives_the_logits_of_base_plus_adapter(run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verifily_core.config import TrainConfig
    from verifily_core.evaluator import load_run_model
    from verifily_core.plugins import load_registries
    from verifily_core.runs import load_run

    out = tmp_path / "merged"
    res = CliRunner().invoke(cli, ["export", "--run", str(run), "--merge", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "verifily_export.json").read_text())["merged"] is True
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    regs = load_registries()
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    with_adapter = load_run_model(load_run(run), cfg, regs, "cpu", None).model
    ids = tok(["### Instruction:\nRepeat the word.\n\n### Input:\napple\n\n### Response:\n"], return_tensors="pt")
    with torch.no_grad():
        a, b = merged(**ids).logits, with_adapter(**ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    lora_delta = load_run_model(load_run(run), cfg, regs, "cpu", None).model  # the adapter changes the output
    with torch.no_grad(), lora_delta.disable_adapter():
        base = lora_delta(**ids).logits
    assert not torch.allclose(a, base, atol=1e-5)


def test_an_adapter_export_and_refusals(run, tmp_path):
    out = tmp_path / "adapter"
    res = CliRunner().invoke(cli, ["export", "--run", str(run), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "adapter_model.safetensors").read_bytes() == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (out / "tokenizer.json").is_file()
    res = CliRunner().invoke(cli, ["export", "--run", str(run), "--output", str(out)])
    assert res.exit_code == 1 and "already exists; export into a new folder" in res.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_the_run_card_and_the_exported_card_hold_the_real_numbers(run, tmp_path):
    from collections import Counter

    import yaml as _yaml

    card = (run / "adapter" / "README.md").read_text()
    assert "More Information Needed" not in card
    front = _yaml.safe_load(card.split("---")[1])
    meta = json.loads((run / "run_meta.json").read_text())
    assert front["base_model"] == meta["base_model"] and front["library_name"] == "peft"
    assert front["license"] == "unknown" and "sft" in front["tags"]
    assert f"reproducibility_hash: `{meta['hashes']['reproducibility_hash']}`" in card
    assert f"| train_loss | {meta['metrics']['train_loss']:.4g} |" in card
    rows = [json.loads(line) for line in (run.parent.parent / "train.jsonl").read_text().splitlines()]
    sources = Counter(r["tags"]["source"] for r in rows)
    assert all(f"| `source={k}` | {n} |" in card for k, n in sources.items())
    assert "verifily eval --run" in card  # test metrics come after the seal

    test = write_jsonl(tmp_path / "test.jsonl", make_sft_rows(6, seed=3))
    res = CliRunner().invoke(cli, ["eval", "--run", str(run), "--test-data", str(test), "--metrics", "token_f1",
                                   "--slice-by", "source"])
    assert res.exit_code == 0, res.output
    value = json.loads((run / "eval" / "eval_results.json").read_text())["overall"]["metrics"]["token_f1"]["value"]
    out = tmp_path / "merged"
    assert CliRunner().invoke(cli, ["export", "--run", str(run), "--merge", "--output", str(out)]).exit_code == 0
    exported = (out / "README.md").read_text()
    assert "library_name: transformers" in exported and f"| overall | 6 | {value:.4f}" in exported
    assert "| `source=human` |" in exported and "correlation, not causation" in exported
