"""The core knows no built-in plugin by name: everything it needs comes through the contracts.

Scans the code of ``verifily_core`` (docstrings and comments are documentation and may give
built-ins as examples) for string literals naming a built-in plugin or anything a built-in
registers (the whole literal, or as a word inside it for names such as ``token_f1`` that are no
English word), for imports of built-in plugin packages and for files only a built-in writes.
"""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from pathlib import Path

from verifily_core.plugins import load_registries

CORE = Path(__file__).resolve().parent.parent / "verifily_core"

PLUGIN_FILES = ("labels.json",)
"""Files only a built-in plugin writes into a run."""

ALLOWED = {
    ("config.py", "local"): "core-spec.md section 8 gives compute.mode the default 'local'",
    ("datasets/resolve.py", "local"): "the dataset id of explicit data_paths files, not the backend",
    ("attribution/__init__.py", "loss"): "the attribution objective 'loss' (a test row's loss), not the metric",
    ("attribution/gradients.py", "loss"): "the attribution objective 'loss' (a test row's loss), not the metric",
    ("commands/attribute.py", "loss"): "the choice --objective loss (a test row's loss), not the metric",
    ("report/gather.py", "loss"): "the training-loss field of train_log.jsonl lines (run-directory.md), not the metric",
}
"""``(file under verifily_core, literal)`` pairs that are not references to a plugin, with the reason."""

GENERIC = {"metrics": "a section of run_meta.json and eval_results.json"}
"""Entry-point names that are also ordinary words of the core's file formats."""


def builtin_names() -> tuple[set[str], set[str]]:
    """``(names, packages)``: the built-in plugins' entry-point names and every name they register,
    and their importable packages."""
    eps = [ep for ep in entry_points(group="verifily") if ep.dist is not None and ep.dist.name == "verifily-train"]
    owners = {ep.name for ep in eps}
    names = {n for n in owners if n not in GENERIC}
    for registry in load_registries().all().values():
        names.update(n for n in registry.names() if registry.owner(n) in owners)
    return names, {ep.value.split(":")[0] for ep in eps}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.add(id(node.value))  # module, class, function and attribute docstrings
    return out


def offences(source: str, rel: str, names: set[str], packages: set[str]) -> list[str]:
    """Where one core module names a built-in (see the module docstring)."""
    tree = ast.parse(source)
    docs = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            hit = (text in names and (rel, text) not in ALLOWED) or any(p in text for p in (*packages, *PLUGIN_FILES)) \
                or any(re.search(rf"\b{re.escape(n)}\b", text) for n in names if re.search(r"[_\d]", n))
            if hit:
                found.append(f"{rel}:{node.lineno}: {text!r}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{rel}:{node.lineno}: imports {m}" for m in modules if m.split(".")[0] in packages]
    return found


def test_the_scan_finds_a_planted_reference():
    names, packages = builtin_names()
    assert {"sft", "classification", "causal_lm", "qlora", "managed", "cross", "token_f1"} <= names
    planted = ('ALIASES = {"f1": {"sft": "token_f1"}}\nfrom verifily_sft import SFTTask\nLABELS = "labels.json"\n'
               'HELP = "the loader (causal_lm or seq2seq)"\n')
    assert len(offences(planted, "x.py", names, packages)) == 5
    documented = '"""The sft task and labels.json."""\ndef f():\n    """``token_f1``."""\n'
    assert offences(documented, "x.py", names, packages) == []


def test_no_core_module_names_a_builtin_plugin():
    names, packages = builtin_names()
    found = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel.startswith("testing/"):  # test helpers build SFT and classification rows on purpose
            continue
        found += offences(path.read_text(encoding="utf-8"), rel, names, packages)
    assert found == [], "the core names built-in plugins; declare what it needs in a contract instead:\n" + \
        "\n".join(found)
