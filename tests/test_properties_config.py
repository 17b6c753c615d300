"""Property-based tests of config loading: YAML files and ``section.key=value`` overrides.

Whatever the document, the outcome is a validated config that survives its own round trip
(``config.yaml`` of a run) or one :class:`ConfigError` line naming the file, override or
field; never another exception. Budget: the hypothesis profiles of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import given, strategies as st

from verifily_core.config import TrainConfig, redact
from verifily_core.config_loading import load_yaml
from verifily_core.errors import ConfigError
from verifily_core.plugins import load_registries
from verifily_core.training import plan_training

BASE = {"task": "sft", "base_model": "org/model", "data_paths": {"train": "train.jsonl"}}


def _paths(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in attrs.fields(cls):
        inner = f.type if attrs.has(f.type) else None
        out += _paths(inner, f"{prefix}{f.name}.") if inner else [f"{prefix}{f.name}"]
    return out


FIELD_PATHS = _paths(TrainConfig) + ["data_paths.train", "data_paths.val", "task_options.prompt_template",
                                     "task_options.labels", "task_options.head", "eval.metric_options.accuracy",
                                     "eval.metric_options.accuracy.average", "model", "training", "lora"]
KEYS = sorted({p.split(".")[-1] for p in FIELD_PATHS} | {p.split(".")[0] for p in FIELD_PATHS})

WEIRD_TEXT = st.sampled_from([
    "", " ", "\n", "a\nb", "\r", "\x00", "\x85", "\u2028", "\ud800", "\udcff", "\ufeff", "é", "~", "null", "yes",
    "off", "1e-4", "1e400", "nan", "0x1F", "1_000", "1:20:30", "2001-02-30", "2001-12-14", "<<", "*a", "&a", "!!int",
    "{", "[", "'", '"', "#", "%", "@", "`", "\\", "a" * 300, "9" * 5000, ".nan", "-.inf", "org/model", "/", "..",
    "~/x", "~nosuchuser-verifily/x", "/dev/null", "ds@v1", "ds@v1\n", "cuda:0", "auto", "all-linear",
    "{instruction}", "{0}", "token",
])
TEXT = st.one_of(WEIRD_TEXT, st.text(max_size=12), st.text(st.characters(codec="utf-8"), max_size=8))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-3, max_value=3000), st.integers(),
    st.sampled_from([10**40, -(10**40), 2**63, 10**400]), st.floats(), TEXT, st.dates(),
)
KEY = st.one_of(st.sampled_from(KEYS), TEXT, st.integers(-2, 2), st.booleans(), st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEY, inner, max_size=4)), max_leaves=12)


@pytest.fixture(scope="module")
def registries():
    return load_registries()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties-config")


def dump(data: object) -> str:
    """YAML text of ``data``; keys keep their order and may mix types."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")  # a lone surrogate becomes invalid UTF-8
    return path


UNEXPECTED = re.compile(r"unexpected \w*(Error|Exception)")


def assert_clean(message: str, *names: str) -> None:
    """One line, no "unexpected", naming one of ``names`` (a file, an override) or a ``$.`` field."""
    assert len(message.splitlines()) == 1, message
    assert not UNEXPECTED.search(message) and "Traceback" not in message, message
    assert "$." in message or any(n in message for n in names), message


def check(registries, path: Path | None = None, data: object = None, overrides: tuple[str, ...] = ()) -> object:
    """What ``verifily train --dry-run`` does with a config: the plan, or one clean ConfigError line.

    A valid config must also print as JSON (``--format json``) and read back from its own
    ``config.yaml`` with the same hash (unless secrets were redacted from it)."""
    try:
        plan = plan_training(str(path) if path else data, overrides=overrides, registries=registries)
    except ConfigError as exc:
        assert_clean(str(exc), *([str(path)] if path else []), *(f"override {o!r}" for o in overrides),
                     *(f"override '{o}'" for o in overrides))
        return exc
    json.dumps(plan.describe())
    cfg = plan.config
    again = TrainConfig.from_dict(load_yaml(cfg.to_yaml(), "config.yaml"), source="config.yaml")
    if redact(cfg.to_dict()) == cfg.to_dict():
        assert again.to_hash() == plan.config_hash
    return plan


# -- documents ------------------------------------------------------------------------------------

@given(doc=st.dictionaries(KEY, VALUES, max_size=6), over_base=st.booleans())
def test_any_yaml_mapping_gives_a_config_or_a_clean_error(registries, folder, doc, over_base):
    data = {**BASE, **doc} if over_base else doc
    check(registries, write(folder / "doc.yaml", dump(data)))


@given(doc=VALUES)
def test_any_yaml_document_gives_a_config_or_a_clean_error(registries, folder, doc):
    check(registries, write(folder / "any.yaml", dump(doc)))


@given(changes=st.lists(st.tuples(st.sampled_from(FIELD_PATHS) | TEXT, VALUES), min_size=1, max_size=4))
def test_one_field_changed_gives_a_config_or_a_clean_error(registries, folder, changes):
    """A valid config with a few fields set to anything: deep in validation, not stopped at the top."""
    data = json.loads(json.dumps(BASE))
    for path, value in changes:
        node = data
        *parents, last = str(path).split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    check(registries, write(folder / "field.yaml", dump(data)))


FRAGMENTS = [
    "task: sft", "base_model: org/model", "data_paths: {train: t.jsonl}", "seed: 1", "seed: 2", "training:",
    "  num_epochs: 3", "  num_epochs: x", "  learning_rate: 1e-4", "lora: &l {r: 8}", "eval: *l", "  <<: *l",
    "<<: *l", "<<: [*l, *l]", "  <<: *undefined", "task_options: !!set {a, b}", "seed: !!int abc", "seed: !!float x",
    "seed: !!binary '!!'", "seed: !!timestamp 2001-13-01", "x: 2001-02-30", "seed: 2001-12-14t21:59:43.10-05:00",
    "seed: 1:20:30", "seed: 0o777", "seed: 0b102", "seed: 0xFFFFFFFFFFFFFFFFFFFFFFFF", "seed: " + "9" * 5000,
    "seed: 1" + "0" * 400 + ".5", "a: &a [*a]", "b: &b {k: *b}", "- item", "? [complex]", ": value", "---", "...",
    "%YAML 1.1", "%TAG ! tag:x,2000:", "x: !local x", "x: !!python/object:os.system x", "x: !!python/name:os.system",
    "!!omap [a: 1, a: 2]", "task_options: !!pairs [a: 1]", "key: 'unterminated", 'key: "\\x"', 'key: "\\ud800"',
    '"\\udfff": 1', "\t tab: 1", "  - [", "{", "}", "]", "x: |", "  literal", "x: >-", "  folded", "# comment", "",
    " ", "\ufeffbom: 1", "x: \x00", "x: \x85", "task_options: {k: &k [1, 2], j: *k}", "task: &t sft",
    "eval: {metric_options: {acc: {x: 2001-01-01}}}", "eval: {metric_options: {1: {}, a: {}}}",
    "task_options: {1: a, b: c}", "task_options: {? [1]: 2}", "task_options:", "  token: s3cret", "output: {dir: ~}",
    "eval: {slice_by_tags: [source, *t]}", "compute: {device: cuda:99}", "lora: {target_modules: [q, q]}",
]


@given(lines=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(FRAGMENTS) | TEXT), max_size=12))
def test_raw_yaml_text_gives_a_config_or_a_clean_error(registries, folder, lines):
    """Hand-written YAML: duplicate keys, anchors and aliases, tags, bad scalars, broken syntax."""
    text = "\n".join("  " * indent + line for indent, line in lines)
    check(registries, write(folder / "raw.yaml", text))


@given(depth=st.integers(1, 3000), style=st.sampled_from(["[", "{a: ", "- ", "a:\n"]))
def test_deep_nesting_gives_a_config_or_a_clean_error(registries, folder, depth, style):
    if style == "[":
        value = "[" * depth + "]" * depth
    elif style == "{a: ":
        value = "{a: " * depth + "1" + "}" * depth
    elif style == "- ":
        value = "\n" + "".join("  " * (i + 1) + "-\n" for i in range(min(depth, 400)))
    else:
        value = "\n" + "".join("  " * (i + 1) + "a:\n" for i in range(min(depth, 400)))
    check(registries, write(folder / "deep.yaml", dump(BASE) + "task_options:\n  x: " + value + "\n"))


@given(width=st.integers(1, 12), levels=st.integers(1, 9))
def test_alias_expansion_gives_a_config_or_a_clean_error(registries, folder, width, levels):
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    body = "\n".join("  " + line for line in lines)
    check(registries, write(folder / "alias.yaml", dump(BASE) + f"eval:\n  metric_options:\n{body}\n"))


# -- overrides ------------------------------------------------------------------------------------

OVERRIDE_KEY = st.one_of(st.sampled_from(FIELD_PATHS), TEXT, st.lists(st.sampled_from(KEYS), min_size=1,
                                                                       max_size=70).map(".".join))
OVERRIDE_VALUE = st.one_of(TEXT, VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10**6,
                                                                      allow_unicode=True).strip()),
                           st.sampled_from(FRAGMENTS))


@given(overrides=st.lists(st.one_of(st.tuples(OVERRIDE_KEY, OVERRIDE_VALUE).map("=".join), TEXT), max_size=4))
def test_any_override_gives_a_config_or_a_clean_error(registries, overrides):
    check(registries, data=BASE, overrides=tuple(overrides))


@given(overrides=st.lists(st.tuples(OVERRIDE_KEY, OVERRIDE_VALUE).map("=".join), min_size=1, max_size=3))
def test_overrides_over_a_file_give_a_config_or_a_clean_error(registries, folder, overrides):
    check(registries, write(folder / "base.yaml", dump(BASE)), overrides=tuple(overrides))
