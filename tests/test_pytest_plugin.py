"""Verifily's pytest plugin: registered through its entry point, light to load, offline on request,
and its fixtures work in a project that has nothing but verifily-train installed."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "verifily_core.testing.pytest_plugin"
HEAVY = ("torch", "transformers", "tokenizers", "peft", "evaluate", "accelerate")
# Set in this session by test.sh and offline mode; a child session must find out for itself.
_INHERITED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "TOKENIZERS_PARALLELISM", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY",
              "VERIFILY_DATASETS_DIR", "VERIFILY_CACHE_DIR")


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run pytest in ``project`` (a fresh directory without conftest) as a separate session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in _INHERITED}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


def _project(tmp_path: Path, tests: str, ini: str | None = None) -> Path:
    """A directory holding ``test_probe.py`` (``tests``) and, if given, ``pytest.ini`` (``ini``)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_probe.py").write_text(textwrap.dedent(tests))
    if ini is not None:
        (project / "pytest.ini").write_text(textwrap.dedent(ini))
    return project


def _plugins_doc_section(heading: str) -> str:
    """The text of docs/plugins.md from ``heading`` to the next heading."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index(f"\n{heading}\n")
    following = re.search(r"^#", text[start + len(heading) + 2:], re.M)
    return text[start:start + len(heading) + 2 + following.start()] if following else text[start:]


def test_the_plugin_is_registered_through_the_pytest11_entry_point():
    found = [(ep.name, ep.value, ep.dist.name) for ep in entry_points(group="pytest11") if ep.value == PLUGIN]
    assert found == [("verifily", PLUGIN, "verifily-train")]


def test_a_project_without_conftest_gets_the_fixtures_and_no_heavy_import(tmp_path):
    """A third party's session: data, a sealed version and the in-process CLI, none of which loads torch."""
    project = _project(tmp_path, f"""
        import json, sys

        def test_data_store_and_cli(verifily_sft_files, verifily_sft_dataset, verifily_store, verifily_cli):
            assert sorted(verifily_sft_files) == ["test", "train", "val"]
            shown = verifily_cli("dataset", "show", verifily_sft_dataset.ref, "--format", "json")
            assert shown.exit_code == 0, shown.output
            assert json.loads(shown.stdout)["num_rows"] == 63
            assert (verifily_store / "ds_sft" / "v1" / "manifest.json").is_file()
            assert [m for m in {HEAVY!r} if m in sys.modules] == []
    """)
    res = _pytest(project)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "1 passed" in res.stdout


def test_without_the_plugin_the_fixtures_do_not_exist(tmp_path):
    project = _project(tmp_path, "def test_data(verifily_sft_files):\n    pass\n")
    res = _pytest(project, "-p", "no:verifily")
    assert res.returncode == 1 and "fixture 'verifily_sft_files' not found" in res.stdout


def test_pytest_lists_exactly_the_documented_fixtures_with_docstrings(tmp_path):
    res = _pytest(_project(tmp_path, "def test_nothing():\n    pass\n"), "--fixtures")
    assert res.returncode == 0, res.stderr
    section = res.stdout[res.stdout.index(f"fixtures defined from {PLUGIN}"):]
    section = re.split(r"^-+ ", section, flags=re.M)[0]  # up to the next plugin's heading, if any
    listed = re.findall(r"^(verifily_\w+)(?: \[\w+ scope\])? -- ", section, re.M)
    documented = re.findall(r"^\| `(verifily_\w+)` \|", _plugins_doc_section("### Fixtures"), re.M)
    assert listed and sorted(listed) == sorted(documented)
    assert "no docstring available" not in section


def test_the_guides_end_to_end_example_is_the_example_plugins_test():
    """docs/plugins.md shows a test that exists, verbatim, in examples/verifily-example-plugin/tests."""
    block = re.search(r"```python\n(.*?)```", _plugins_doc_section("### Fixtures"), re.S).group(1)
    shown = next(n for n in ast.parse(block).body if isinstance(n, ast.FunctionDef))
    source = (ROOT / "examples" / "verifily-example-plugin" / "tests" / "test_example_plugin.py").read_text()
    real = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == shown.name)
    assert ast.get_source_segment(block, shown) == ast.get_source_segment(source, real)
    imports = {ast.unparse(n) for n in ast.parse(block).body if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imports <= {ast.unparse(n) for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))}


OFFLINE_PROBE = """
    import os

    def test_raises_torch_threads():
        import torch

        torch.set_num_threads(3)

    def test_sees_the_environment():
        import torch

        import tempfile

        cache = os.environ.get("VERIFILY_CACHE_DIR", "")
        print("ENV=" + os.environ.get("HF_HUB_OFFLINE", "-") + os.environ.get("OMP_NUM_THREADS", "-"),
              "THREADS=%d" % torch.get_num_threads(),
              "CACHE=" + ("session" if cache.startswith(tempfile.gettempdir()) and os.path.isdir(cache) else "-"))
"""


@pytest.mark.parametrize("how, expected", [
    ("none", "ENV=-- THREADS=3 CACHE=-"),  # an unrelated project's session is left alone
    ("flag", "ENV=11 THREADS=1 CACHE=session"),  # and its own, temporary VERIFILY_CACHE_DIR
    ("ini", "ENV=11 THREADS=1 CACHE=session"),
])
def test_offline_mode_is_opt_in_and_keeps_one_torch_thread(tmp_path, how, expected):
    ini = "[pytest]\nverifily_offline = true\n" if how == "ini" else None
    res = _pytest(_project(tmp_path, OFFLINE_PROBE, ini), "-s", *(["--verifily-offline"] if how == "flag" else []))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert expected in res.stdout


def test_importing_the_testing_helpers_and_the_plugin_loads_neither_heavy_libraries_nor_the_cli():
    probe = (f"import sys, verifily_core.testing, verifily_core.testing.tiny_models, {PLUGIN}\n"
             f"print(','.join(m for m in {(*HEAVY, 'verifily_core.cli', 'click.testing')!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    """Every module (or ``module.name``) an import statement in ``path`` names, relative imports resolved."""
    package = path.relative_to(ROOT).parts[:-1]  # the package that holds the module
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = package[:len(package) - node.level + 1] if node.level else ()
            base = ".".join([*parent, *([node.module] if node.module else [])])
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def test_nothing_in_the_core_outside_testing_imports_the_testing_package():
    core = ROOT / "verifily_core"
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith("verifily_core.testing"))
                 for p in core.rglob("*.py") if core / "testing" not in p.parents}
    assert {p: m for p, m in offenders.items() if m} == {}
    assert "verifily_core.testing.data" in _imports(core / "testing" / "tiny_models.py")  # the scan sees imports


def test_the_tagged_data_fixtures_write_the_documented_splits(verifily_sft_files, verifily_classification_files):
    counts = {}
    for name, files in (("sft", verifily_sft_files), ("classification", verifily_classification_files)):
        for split, path in files.items():
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            counts[name, split] = len(rows)
            sources = [r["tags"]["source"] for r in rows]
            assert sources[:3] == ["human", "synthetic", "ai_contaminated"]
            assert all(r["tags"]["difficulty"] in ("easy", "medium", "hard") for r in rows)
    assert counts == {("sft", "train"): 30, ("sft", "val"): 9, ("sft", "test"): 24,
                      ("classification", "train"): 60, ("classification", "val"): 15, ("classification", "test"): 30}


def test_the_dataset_fixtures_seal_a_version_in_the_default_store(verifily_classification_dataset, verifily_store):
    from verifily_core.datasets.store import open_store

    assert verifily_classification_dataset.ref == "ds_classification@v1"
    found = open_store().get("ds_classification@v1")  # the default store is the fixture's
    assert found.root == str(verifily_store / "ds_classification" / "v1")
    assert {f.split: f.num_rows for f in found.files} == {"train": 60, "val": 15, "test": 30}
    assert Path(found.root).stat().st_mode & 0o222 == 0  # sealed: read-only


def test_tiny_models_are_built_once_per_kind_and_steps(verifily_tiny_model, verifily_tiny_bert_dir):
    assert verifily_tiny_model("bert") is verifily_tiny_bert_dir
    assert verifily_tiny_model("bert", pretrain_steps=0) is verifily_tiny_bert_dir
    with pytest.raises(ValueError, match="unknown tiny model kind 'gpt2'"):
        verifily_tiny_model("gpt2")
