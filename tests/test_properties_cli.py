"""Property-based tests through the real command line (click's runner, in-process).

``verifily train --dry-run`` with any config file and arguments, and ``verifily dataset create``
with any rows (then ``list``, ``show``, ``verify --rows`` and ``diff`` of what it created): the
exit code is one of the documented 0, 1, 2 and the output holds neither a traceback nor an
"unexpected" line. Each call is slow-ish, so these run a quarter of the profile's examples.
"""

from __future__ import annotations

import itertools
import json

import pytest
import yaml
from hypothesis import event, given, settings, strategies as st

from verifily_core.testing.data import make_sft_rows, write_jsonl

FEW = settings(max_examples=max(4, settings.default.max_examples // 4))
BASE = {"task": "sft", "base_model": "org/model"}


def assert_clean(res, codes=(0, 1, 2)) -> None:
    assert res.exit_code in codes, (res.exit_code, res.output, res.exception)
    event(f"exit {res.exit_code}")
    assert "Traceback" not in res.output and "unexpected" not in res.output, res.output


TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", "\n", "a\nb", "\x00", "\ud800", "9" * 5000, "2001-02-30",
                                                       "1e-4", "-1", "nan", "cuda:0", "[", "{", "!!int", "~"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
VALUES = st.recursive(st.one_of(SCALARS, st.dates()), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
SECTIONS = ["task", "base_model", "dataset_version", "data_paths", "model", "training", "lora", "compute", "eval",
            "data_checks", "output", "task_options", "seed"]
FLAGS = ["--epochs", "--batch-size", "--lr", "--lora-r", "--seed", "--quantization", "--device", "--mode", "--task",
         "--base-model", "--dataset", "--name", "--output-dir", "--format", "--resume"]
ARGS = st.one_of(
    st.tuples(st.sampled_from(FLAGS), TEXT).map(list),
    st.tuples(st.sampled_from(["training.num_epochs", "lora.r", "seed", "eval.metric_options.x", "task_options.y",
                               "compute", "nope.key"]), TEXT).map(lambda kv: ["=".join(kv)]),
    st.sampled_from([["--bogus"], ["--epochs"], ["--format", "json"], ["extra"], ["--"], ["-h"], ["--no-data-check"]]),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties-cli")


@FEW
@given(doc=st.one_of(st.just({}), st.dictionaries(st.sampled_from(SECTIONS) | TEXT, VALUES, max_size=4)),
       over_base=st.sampled_from([True, True, False]), args=st.lists(ARGS, max_size=2),
       lines=st.lists(st.deferred(lambda: LINE), max_size=4))
def test_train_dry_run_exits_0_1_or_2_with_no_traceback(verifily_cli, folder, doc, over_base, args, lines):
    """The config, its flags and overrides, and the rows the dry run checks are all generated."""
    (folder / "train.jsonl").write_bytes(b"\n".join(lines))
    base = {**BASE, "data_paths": {"train": str(folder / "train.jsonl")}}
    path = folder / "train.yaml"
    text = yaml.safe_dump({**base, **doc} if over_base else doc, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    res = verifily_cli("train", "--dry-run", "--config", path, *[a for arg in args for a in arg])
    assert_clean(res)


ROW = st.fixed_dictionaries(
    {"instruction": st.one_of(st.text(min_size=1, max_size=6), JSON_VALUES), "output": st.text(min_size=1, max_size=6)},
    optional={"input": st.one_of(st.text(max_size=4), JSON_VALUES), "id": JSON_VALUES,
              "tags": st.one_of(st.dictionaries(TEXT, st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                                                                st.floats(), TEXT), max_size=3), JSON_VALUES)},
)
LINE = st.one_of(ROW.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
                 ROW.map(lambda r: json.dumps(r).encode()),
                 st.sampled_from([b"", b"\xef\xbb\xbf{}", b"[]", b"{", b"\xff", b"NaN", b"[" * 100,
                                  b'{"instruction": "\\ud800", "output": "x"}',
                                  b'{"instruction": "a", "output": ' + b"9" * 5000 + b"}"]))
VERSIONS = itertools.count(1)


@pytest.fixture(scope="module")
def store(folder):
    """A store holding ``ds@base``, the version every created one is diffed against."""
    from verifily_core.testing.pytest_plugin import invoke_verifily

    root = folder / "store"
    rows = write_jsonl(folder / "base.jsonl", make_sft_rows(5, seed=1))
    assert invoke_verifily("dataset", "create", "--id", "ds", "--version", "base", "--task", "sft", "--train", rows,
                           "--store", root).exit_code == 0
    return root


SCHEMA = st.one_of(st.none(), JSON_VALUES.map(json.dumps), st.dictionaries(TEXT, st.fixed_dictionaries(
    {"type": st.sampled_from(["categorical", "number", "boolean", "string", "other"])},
    optional={"values": JSON_VALUES}), max_size=2).map(json.dumps))


@FEW
@given(lines=st.lists(LINE, min_size=1, max_size=6), bom=st.booleans(), schema=SCHEMA)
def test_dataset_create_exits_0_1_or_2_with_no_traceback(verifily_cli, folder, store, lines, bom, schema):
    rows = folder / "rows.jsonl"
    rows.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
    version = f"v{next(VERSIONS)}"
    extra = []
    if schema is not None:
        (folder / "schema.json").write_text(schema, encoding="utf-8", errors="surrogatepass")
        extra = ["--tag-schema", folder / "schema.json"]
    res = verifily_cli("dataset", "create", "--id", "ds", "--version", version, "--task", "sft", "--train", rows,
                       "--store", store, *extra)
    assert_clean(res)
    if res.exit_code:
        assert not (store / "ds" / version).exists()
        return
    for args in (["list"], ["show", f"ds@{version}"], ["show", f"ds@{version}", "--format", "json"],
                 ["verify", f"ds@{version}", "--rows"], ["diff", "ds@base", f"ds@{version}"]):
        res = verifily_cli("dataset", *args, "--store", store)
        assert_clean(res, codes=(0,))
