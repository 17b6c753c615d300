"""Shared fixtures: offline environment, one torch thread, tiny models built once per session,
and runners for the ``verifily`` command line (in-process and as a subprocess)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Offline and single-threaded, set before anything imports torch or transformers.
os.environ.update({
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
})
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Thread oversubscription on small machines is catastrophic: one torch thread in every test.

    ``OMP_NUM_THREADS=1`` covers a first import of torch; this also undoes a test that raised it.
    Torch is never imported here, only checked for in ``sys.modules``.
    """
    _single_thread_if_imported()
    yield
    _single_thread_if_imported()


def _single_thread_if_imported() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _tiny(tmp_path_factory: pytest.TempPathFactory, kind: str, pretrain_steps: int = 0) -> Path:
    import torch

    from verifily_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(1)
    return build_tiny_model(kind, tmp_path_factory.mktemp(f"tiny-{kind}"), pretrain_steps=pretrain_steps)


@pytest.fixture(scope="session")
def documented_json():
    """``documented_json(doc, heading)``: the first JSON example after ``## heading`` in ``docs/<doc>``."""
    import json
    import re

    def find(doc: str, heading: str):
        text = (Path(__file__).resolve().parent.parent / "docs" / doc).read_text()
        start = text.index(f"\n## {heading}\n")
        block = re.search(r"```json\n(.*?)```", text[start:], re.S)
        return json.loads(block.group(1))

    return find


@pytest.fixture(scope="session")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """``examples/verifily-example-plugin`` pip-installed into a private target directory, as a
    user's ``pip install`` would; returns an environment with that directory on ``PYTHONPATH``.
    The source is copied first so that the build leaves nothing in the repository."""
    import shutil
    import subprocess

    source = tmp_path_factory.mktemp("plugin-src") / "verifily-example-plugin"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "verifily-example-plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    return dict(os.environ, PYTHONPATH=str(target))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny Llama (CausalLM) with its tokenizer, briefly pretrained so LoRA has something to adapt."""
    return _tiny(tmp_path_factory, "llama", pretrain_steps=60)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A tiny T5 (Seq2SeqLM) with its tokenizer, briefly pretrained (copying)."""
    return _tiny(tmp_path_factory, "t5", pretrain_steps=60)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny BERT (sequence classification) with its tokenizer."""
    return _tiny(tmp_path_factory, "bert")


@pytest.fixture(scope="session")
def tiny_deberta_dir(tmp_path_factory) -> Path:
    """A tiny DeBERTa-v2 (sequence classification) with its tokenizer."""
    return _tiny(tmp_path_factory, "deberta-v2")


@pytest.fixture
def cli_runner():
    """``cli_runner(*args, input=None, env=None)`` runs ``verifily ARGS`` in-process and returns
    click's Result (``exit_code``, separate ``stdout``/``stderr``, ``output``, ``exception``)."""
    from verifily_core.testing import invoke_verifily

    return invoke_verifily


@pytest.fixture
def run_verifily():
    """``run_verifily(*args, cwd=None, env=None, timeout=600)`` runs ``verifily ARGS`` in a fresh
    Python process and returns the ``subprocess.CompletedProcess`` (text stdout/stderr)."""
    from verifily_core.testing import run_verifily as run

    return run
