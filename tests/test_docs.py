"""Documentation cannot drift: every hook and every config field (with its default) is documented."""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path

import attrs
import pytest

from verifily_core import hookspecs
from verifily_core.config import TrainConfig
from verifily_core.config_validation import RANGE_RULES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hook_names():
    return [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("verifily_")]


@pytest.mark.parametrize("hook", _hook_names())
def test_every_hook_is_documented(hook):
    text = (DOCS / "plugins.md").read_text()
    assert f"### `{hook}(" in text, f"{hook} has no section in docs/plugins.md"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


@pytest.mark.parametrize("hook", _hook_names())
def test_every_hook_section_names_its_arguments_and_firstresult(hook):
    """The heading ``### `hook(a, b)` (firstresult)`` matches the spec's signature and kind."""
    text = (DOCS / "plugins.md").read_text()
    heading = re.search(rf"^### `{hook}\((.*?)\)`(.*)$", text, re.M)
    spec = getattr(hookspecs, hook)
    params = [p for p in inspect.signature(spec).parameters]
    assert [a.strip() for a in heading.group(1).split(",") if a.strip()] == params
    firstresult = spec.verifily_spec["firstresult"]
    assert ("(firstresult)" in heading.group(2)) == firstresult, f"{hook}: firstresult marking differs"


def test_the_plugin_kinds_table_lists_every_kind_with_its_base_class_and_hook():
    from verifily_core.plugins import PLUGIN_KINDS

    text = (DOCS / "plugins.md").read_text()
    table = text[text.index("## Plugin kinds"):text.index("## Hook reference")]
    rows = set(re.findall(r"^\| [\w ]+ \| `([\w.]+)` \| `(verifily_register_\w+)` \|", table, re.M))
    assert rows == {(f"{k.base.__module__}.{k.base.__qualname__}", k.hook_name) for k in PLUGIN_KINDS}


def _attrs_fields(cls, prefix=""):
    """``(dotted path, attrs field, type hint, nested attrs class or None)`` for every field, depth first."""
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        typ = hints[f.name]
        nested = next((t for t in (typ, *typing.get_args(typ)) if attrs.has(t)), None)
        yield prefix + f.name, f, typ, nested
        if nested is not None:
            yield from _attrs_fields(nested, prefix + f.name + ".")


def _config_fields():
    """The leaf fields of TrainConfig: ``(path, field, type hint)``."""
    return [(path, f, typ) for path, f, typ, nested in _attrs_fields(TrainConfig) if nested is None]


def _documented_rows():
    """``{field: (type, default)}`` from the tables of docs/config.md."""
    rows = {}
    for line in (DOCS / "config.md").read_text().splitlines():
        m = re.match(r"^\| `([\w.]+)` \| ([^|]+(?:\\\|[^|]+)*) \| (.+?) \| .+ \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2).replace("\\|", "|"), m.group(3))
    return rows


def _documented_defaults():
    return {name: default for name, (_, default) in _documented_rows().items()}


def _render_type(typ) -> str:
    """A type as docs/config.md writes it: ``str | null``, ``mapping``, ``list[str]``; a Literal is ``str``."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_render_type(a) for a in args)
    if origin is typing.Literal:
        return type(args[0]).__name__
    if origin is dict or typ is dict:
        return "mapping"
    if origin is list:
        return f"list[{_render_type(args[0])}]"
    return typ.__name__


def _render_default(f):
    if f.default is attrs.NOTHING:
        return "(required)"
    value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{value!r}`".replace("'", "")
    return f"`{value}`"


@pytest.mark.parametrize("path, field", [(p, f) for p, f, _ in _config_fields()],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_field_is_documented_with_its_default(path, field):
    documented = _documented_defaults()
    assert path in documented, f"{path} is missing from docs/config.md"
    assert documented[path] == _render_default(field), f"default of {path} differs from docs/config.md"


@pytest.mark.parametrize("path, typ", [(p, t) for p, _, t in _config_fields()],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_field_is_documented_with_its_type(path, typ):
    assert _documented_rows()[path][0] == _render_type(typ), f"type of {path} differs from docs/config.md"


def test_docs_list_no_unknown_config_fields():
    known = {p for p, _, _ in _config_fields()} | {"data_paths"}
    assert set(_documented_defaults()) - known == set()


TASK_OPTION_DOCS = {"sft": "training.md", "classification": "classification.md", "dpo": "dpo.md"}


def _builtin_tasks():
    from verifily_core.plugins import load_registries, make_plugin_manager

    regs = load_registries(make_plugin_manager())
    builtin = DOCS.parent / "plugins"
    return {name: regs.tasks.get(name) for name in regs.tasks.names()
            if Path(inspect.getfile(type(regs.tasks.get(name)))).resolve().is_relative_to(builtin)}


def test_every_builtin_task_has_an_options_page():
    assert set(_builtin_tasks()) == set(TASK_OPTION_DOCS)


@pytest.mark.parametrize("task", sorted(TASK_OPTION_DOCS))
def test_every_task_option_is_documented(task):
    options = _builtin_tasks()[task].parse_options({})
    text = (DOCS / TASK_OPTION_DOCS[task]).read_text()
    for name in (path for path, f, _, _ in _attrs_fields(type(options)) if f.init):
        assert f"| `{name}` |" in text, f"task_options.{name} of {task} is missing from docs/{TASK_OPTION_DOCS[task]}"


@pytest.mark.parametrize("path, rule", [(p, r) for p, _, r in RANGE_RULES])
def test_every_range_rule_is_stated_in_the_config_reference(path, rule):
    row = next(line for line in (DOCS / "config.md").read_text().splitlines() if line.startswith(f"| `{path}` |"))
    assert rule in row, f"docs/config.md does not state the rule of {path}: {rule}"


@pytest.mark.parametrize("path, ok, rule", RANGE_RULES, ids=[p for p, _, _ in RANGE_RULES])
def test_a_value_breaking_a_range_rule_is_a_config_error_naming_the_field(path, ok, rule):
    bad = next(v for v in (0, -2, 1.5, 7) if not ok(v))
    cfg = TrainConfig.from_dict({"task": "sft", "base_model": "org/m", "data_paths": {"train": "t.jsonl"},
                                 path.split(".")[0]: {path.split(".")[1]: bad}})
    assert f"$.{path}: must be {rule}" in cfg.problems()


@pytest.mark.parametrize("name", ["train", "evaluate", "compare", "reproduce", "list_runs", "create_dataset",
                                  "export_run", "push_run", "report", "attribute", "leave_out"])
def test_every_api_function_is_documented_with_its_signature(name):
    """docs/python-api.md's heading for each function lists its parameters and defaults as the code does."""
    from verifily_core import api

    text = (DOCS / "python-api.md").read_text()
    heading = re.search(rf"^### `{name}\((.*)\)`$", text, re.M)
    assert heading, f"docs/python-api.md has no section for {name}()"
    real = []
    for p in inspect.signature(getattr(api, name)).parameters.values():
        real.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}".replace("'", '"'))
    assert [a.strip() for a in heading.group(1).split(",")] == real


def test_the_cli_reference_is_the_one_the_commands_render():
    """docs/cli.md's option tables are generated from the click commands; regenerate after a change."""
    from verifily_core.commands.reference import BEGIN, END, render_reference

    text = (DOCS / "cli.md").read_text()
    documented = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert documented == render_reference().strip(), (
        "docs/cli.md is out of date: run python -m verifily_core.commands.reference --write docs/cli.md")


def _readme_two_commands() -> list[str]:
    text = (DOCS.parent / "README.md").read_text()
    section = text[text.index("## The two commands"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_readme_names_the_two_commands_that_ci_and_the_demo_test_run():
    """README's main job is what tests/test_demo.py runs; its test command is exactly what .ci/run calls."""
    main_job, tests = _readme_two_commands()
    assert main_job == "./demo.sh" and (DOCS.parent / "demo.sh").is_file()
    ci = [line.strip() for line in (DOCS.parent / ".ci" / "run").read_text().splitlines()]
    assert tests in ci, f".ci/run does not call README's test command {tests!r}"
