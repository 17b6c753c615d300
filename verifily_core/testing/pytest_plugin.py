"""Verifily's pytest plugin: fixtures for testing Verifily Train and plugins written for it.

Installing ``verifily-train`` registers this module with pytest (entry point ``pytest11``,
name ``verifily``; ``pytest -p no:verifily`` turns it off). It provides

- tiny real-architecture models, built offline once per session:
  ``verifily_tiny_model`` (any kind), ``verifily_tiny_llama_dir``, ``verifily_tiny_t5_dir``,
  ``verifily_tiny_bert_dir``, ``verifily_tiny_deberta_dir``;
- tagged data: ``verifily_sft_files`` / ``verifily_classification_files`` (JSONL splits),
  ``verifily_store`` (an empty dataset store) and ``verifily_sft_dataset`` /
  ``verifily_classification_dataset`` (a sealed version in it);
- the command line: ``verifily_cli`` (in-process) and ``verifily_subprocess`` (a real process);
- with ``verifily_offline = true`` in the pytest configuration (or ``--verifily-offline``):
  no network for HuggingFace libraries and one torch thread, set before any test module
  imports them.

pytest loads this module in every session of an environment that has verifily-train, so it
imports no heavy library: torch, transformers and the ``verifily`` CLI are imported only
inside fixtures, when a test uses them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from click.testing import Result

    from verifily_core.datasets.manifest import DatasetVersion

# Forced in offline mode: no Hub access, one thread for OpenMP/MKL and the tokenizers library.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
}
# Set in offline mode unless already set: quiet logs and no progress bars.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}

# ``python -m verifily_core.cli`` has no ``__main__`` guard; this runs the console-script entry.
_ENTRY = "from verifily_core.cli import main; main()"
_INI = "verifily_offline"


def apply_offline_environment() -> None:
    """Set :data:`OFFLINE_ENV` (always) and :data:`QUIET_ENV` (where unset) in ``os.environ``.

    HuggingFace libraries read these when imported, so call this before importing them."""
    os.environ.update(OFFLINE_ENV)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def invoke_verifily(*args: Any, input: str | None = None, env: Mapping[str, str] | None = None,
                    catch_exceptions: bool = True) -> Result:
    """Run ``verifily ARGS`` in this process with click's ``CliRunner``.

    Returns click's ``Result``: ``exit_code``, ``stdout`` and ``stderr`` (separate), ``output``
    (both, interleaved) and ``exception``. Arguments are converted with ``str``; ``env`` is
    applied for the duration of the call.
    """
    from click.testing import CliRunner

    from verifily_core.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=dict(env or {}),
                              catch_exceptions=catch_exceptions, prog_name="verifily")


def run_verifily(*args: Any, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
                 timeout: float | None = 600, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``verifily ARGS`` in a fresh Python process (the real entry point, real exit code).

    ``env`` is added to a copy of ``os.environ``. Returns the ``CompletedProcess`` with text
    ``stdout`` and ``stderr``.
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", _ENTRY, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


# -- offline mode -----------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--verifily-offline`` and the ini option ``verifily_offline``."""
    help_text = ("run HuggingFace libraries offline with one torch thread (HF_HUB_OFFLINE=1, "
                 "OMP_NUM_THREADS=1, ...), set before test modules are imported")
    parser.addini(_INI, help_text, type="bool", default=False)
    parser.getgroup("verifily").addoption("--verifily-offline", action="store_true", default=False,
                                          help=help_text)


def _offline_requested(config: pytest.Config) -> bool:
    flag = getattr(config.known_args_namespace, "verifily_offline", False)
    return bool(flag or config.getini(_INI))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """In offline mode, set the environment before conftest files (and so test modules) import anything."""
    if _offline_requested(early_config):
        apply_offline_environment()


_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """In offline mode, keep torch at one thread in every test (see :class:`OneTorchThread`) and
    give the session its own ``VERIFILY_CACHE_DIR`` (unless one is set), removed at the end, so
    tests leave nothing in the user's cache."""
    if _offline_requested(config):
        apply_offline_environment()  # idempotent; covers loading by ``pytest_plugins`` too
        config.pluginmanager.register(OneTorchThread(), "verifily-one-torch-thread")
        if "VERIFILY_CACHE_DIR" not in os.environ:
            import tempfile

            config.stash[_CACHE_KEY] = os.environ["VERIFILY_CACHE_DIR"] = tempfile.mkdtemp(prefix="verifily-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's own cache directory (see :func:`pytest_configure`)."""
    path = config.stash.get(_CACHE_KEY, None)
    if path is not None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop("VERIFILY_CACHE_DIR", None)


def _single_thread_if_imported() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class OneTorchThread:
    """Offline mode's guard: one torch thread before and after every test.

    ``OMP_NUM_THREADS=1`` covers the first import of torch; this also undoes a test that
    raised the count. Torch is never imported here, only looked up in ``sys.modules``.
    """

    @pytest.fixture(autouse=True)
    def _verifily_one_torch_thread(self) -> Iterator[None]:
        """Set torch (if imported) to one thread around the test."""
        _single_thread_if_imported()
        yield
        _single_thread_if_imported()


# -- tiny models ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def verifily_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``verifily_tiny_model(kind, pretrain_steps=0)``: the directory of a tiny ``kind`` model
    (``llama``, ``t5``, ``bert``, ``deberta-v2``) with its tokenizer, loadable with
    ``from_pretrained``. Built offline with one torch thread (so identical everywhere), once
    per session for each ``(kind, pretrain_steps)``; see
    :func:`verifily_core.testing.tiny_models.build_tiny_model`."""
    built: dict[tuple[str, int], Path] = {}

    def build(kind: str, pretrain_steps: int = 0) -> Path:
        import torch

        from verifily_core.testing.tiny_models import build_tiny_model, canonical_kind

        key = (canonical_kind(kind), pretrain_steps)
        if key not in built:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                out = tmp_path_factory.mktemp(f"verifily-tiny-{key[0]}-{pretrain_steps}")
                built[key] = build_tiny_model(key[0], out, pretrain_steps=pretrain_steps)
            finally:
                torch.set_num_threads(threads)
        return built[key]

    return build


@pytest.fixture(scope="session")
def verifily_tiny_llama_dir(verifily_tiny_model: Callable[..., Path]) -> Path:
    """A tiny Llama (causal LM) with its tokenizer and a chat template, briefly pretrained
    (60 steps) so LoRA has something to adapt."""
    return verifily_tiny_model("llama", pretrain_steps=60)


@pytest.fixture(scope="session")
def verifily_tiny_t5_dir(verifily_tiny_model: Callable[..., Path]) -> Path:
    """A tiny T5 (seq2seq LM) with its tokenizer, briefly pretrained (60 steps of copying)."""
    return verifily_tiny_model("t5", pretrain_steps=60)


@pytest.fixture(scope="session")
def verifily_tiny_bert_dir(verifily_tiny_model: Callable[..., Path]) -> Path:
    """A tiny BERT (sequence classification, 2 labels) with its WordPiece tokenizer."""
    return verifily_tiny_model("bert")


@pytest.fixture(scope="session")
def verifily_tiny_deberta_dir(verifily_tiny_model: Callable[..., Path]) -> Path:
    """A tiny DeBERTa-v2 (sequence classification, 2 labels) with its WordPiece tokenizer."""
    return verifily_tiny_model("deberta-v2")


# -- tagged data ------------------------------------------------------------------------------

def _write_splits(folder: Path, make: Callable[..., list[dict[str, Any]]],
                  splits: Mapping[str, tuple[int, int]]) -> dict[str, Path]:
    """Write ``make(n, seed=seed)`` for each ``split: (n, seed)`` to ``folder/<split>.jsonl``."""
    from verifily_core.testing.data import write_jsonl

    return {split: write_jsonl(folder / f"{split}.jsonl", make(n, seed=seed)) for split, (n, seed) in splits.items()}


@pytest.fixture
def verifily_sft_files(tmp_path: Path) -> dict[str, Path]:
    """Tagged SFT rows as JSONL files ``{"train", "val", "test"}`` of 30, 9 and 24 rows
    (:func:`~verifily_core.testing.data.make_sft_rows`, seeds 1, 2, 3), ready for
    ``data_paths``. Every row has ``tags`` ``source`` (cycling ``human``, ``synthetic``,
    ``ai_contaminated``) and ``difficulty``."""
    from verifily_core.testing.data import make_sft_rows

    return _write_splits(tmp_path / "verifily-sft", make_sft_rows,
                         {"train": (30, 1), "val": (9, 2), "test": (24, 3)})


@pytest.fixture
def verifily_classification_files(tmp_path: Path) -> dict[str, Path]:
    """Tagged sentiment rows (labels ``pos``/``neg``) as JSONL files ``{"train", "val",
    "test"}`` of 60, 15 and 30 rows (:func:`~verifily_core.testing.data.make_classification_rows`,
    seeds 1, 2, 3), tagged like :func:`verifily_sft_files`."""
    from verifily_core.testing.data import make_classification_rows

    return _write_splits(tmp_path / "verifily-classification", make_classification_rows,
                         {"train": (60, 1), "val": (15, 2), "test": (30, 3)})


@pytest.fixture
def verifily_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty dataset store directory, made the default for this test
    (``VERIFILY_DATASETS_DIR`` points at it, for ``dataset_version:`` and ``verifily dataset``)."""
    root = tmp_path / "verifily-store"
    monkeypatch.setenv("VERIFILY_DATASETS_DIR", str(root))
    return root


def _create_version(store: Path, dataset_id: str, task: str, files: Mapping[str, Path]) -> DatasetVersion:
    from verifily_core.datasets.store import DatasetStore
    from verifily_core.plugins import load_registries

    return DatasetStore(store).create(dataset_id, "v1", task, files, registries=load_registries())


@pytest.fixture
def verifily_sft_dataset(verifily_store: Path, verifily_sft_files: dict[str, Path]) -> DatasetVersion:
    """The sealed dataset version ``ds_sft@v1`` (task ``sft``) made from
    :func:`verifily_sft_files` in :func:`verifily_store`; its ``ref`` goes into ``dataset_version:``."""
    return _create_version(verifily_store, "ds_sft", "sft", verifily_sft_files)


@pytest.fixture
def verifily_classification_dataset(verifily_store: Path,
                                    verifily_classification_files: dict[str, Path]) -> DatasetVersion:
    """The sealed dataset version ``ds_classification@v1`` (task ``classification``) made from
    :func:`verifily_classification_files` in :func:`verifily_store`."""
    return _create_version(verifily_store, "ds_classification", "classification", verifily_classification_files)


# -- the command line -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def verifily_cli() -> Callable[..., Result]:
    """``verifily_cli(*args, input=None, env=None, catch_exceptions=True)`` runs ``verifily ARGS``
    in-process (fast) and returns click's ``Result`` (``exit_code``, separate ``stdout`` and
    ``stderr``, ``output``, ``exception``); see :func:`invoke_verifily`."""
    return invoke_verifily


@pytest.fixture(scope="session")
def verifily_subprocess() -> Callable[..., subprocess.CompletedProcess]:
    """``verifily_subprocess(*args, cwd=None, env=None, timeout=600, input=None)`` runs
    ``verifily ARGS`` in a fresh Python process and returns the ``CompletedProcess`` (text
    ``stdout``/``stderr``, the real exit code); see :func:`run_verifily`."""
    return run_verifily
