"""Loading a run's files never runs code from the run folder unless the run's config opted in."""

from __future__ import annotations

import json
import shutil

from verifily_core.config import TrainConfig


def _config(trust: bool) -> TrainConfig:
    return TrainConfig.from_dict({"task": "sft", "base_model": "org/m", "data_paths": {"train": "t"},
                                  "model": {"trust_remote_code": trust}})


def test_a_run_tokenizer_with_auto_map_code_is_loaded_without_running_it(tmp_path, verifily_tiny_llama_dir):
    from verifily_core.modeling import _run_tokenizer

    run = tmp_path / "run"
    shutil.copytree(verifily_tiny_llama_dir, run / "tokenizer")
    marker = tmp_path / "code-ran"
    (run / "tokenizer" / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    cfg_path = run / "tokenizer" / "tokenizer_config.json"
    doc = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**doc, "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}))

    tokenizer = _run_tokenizer(run, _config(trust=False))  # no prompt, no import of evil.py
    assert tokenizer("hello")["input_ids"] and not marker.exists()
    assert type(tokenizer).__module__.startswith("transformers.")
