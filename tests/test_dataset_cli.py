"""``verifily dataset`` commands: create from folders, tag schemas, show/list/verify/diff output."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import make_classification_rows, make_sft_rows, write_jsonl


@pytest.fixture
def store(verifily_store):
    """An empty dataset store, the default of ``verifily dataset`` in this test."""
    return verifily_store


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_create_from_a_folder_of_split_files(tmp_path, store):
    folder = tmp_path / "data"
    write_jsonl(folder / "train.jsonl", make_sft_rows(12, 1))
    write_jsonl(folder / "val.jsonl", make_sft_rows(4, 2))
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--from-dir", folder)
    assert res.exit_code == 0, res.output
    assert "Created ds@v1: 16 rows (train 12, val 4)" in res.stdout
    vdir = store / "ds" / "v1"
    assert sorted(p.name for p in vdir.iterdir()) == ["manifest.json", "train.jsonl", "val.jsonl"]
    for p in (vdir, *vdir.iterdir()):  # sealed, yet readable by everyone
        assert p.stat().st_mode & 0o777 in (0o444, 0o555), p
    assert not [p for p in (store / "ds").iterdir() if p.name.startswith(".")]  # no temporary left


def test_create_from_another_stores_version_folder_keeps_task_and_schema(tmp_path, store):
    other = tmp_path / "other"
    src = write_jsonl(tmp_path / "c.jsonl", make_classification_rows(10, 1))
    assert run("dataset", "create", "--id", "cls", "--version", "v1", "--task", "classification",
               "--train", src, "--store", other).exit_code == 0
    res = run("dataset", "create", "--id", "cls", "--version", "v1", "--from-dir", other / "cls" / "v1")
    assert res.exit_code == 0, res.output
    a = json.loads((other / "cls" / "v1" / "manifest.json").read_text())
    b = json.loads((store / "cls" / "v1" / "manifest.json").read_text())
    assert b["task"] == "classification" and b["tag_schema"] == a["tag_schema"]
    assert b["content_hash"] == a["content_hash"]


def test_create_from_a_tampered_version_folder_refuses(tmp_path, store):
    other = tmp_path / "other"
    run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft",
        "--train", write_jsonl(tmp_path / "a.jsonl", make_sft_rows(5, 1)), "--store", other)
    target = other / "ds" / "v1" / "train.jsonl"
    target.chmod(target.stat().st_mode | stat.S_IWUSR)
    with open(target, "a") as fh:
        fh.write("\n")
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--from-dir", other / "ds" / "v1")
    assert res.exit_code == 2 and "sha256 mismatch" in res.stderr
    assert not (store / "ds").exists()


def test_a_given_tag_schema_is_enforced(tmp_path, store):
    schema = write_jsonl(tmp_path / "schema.json", [])
    schema.write_text(json.dumps({"source": {"type": "categorical", "values": ["human", "synthetic"]},
                                  "difficulty": {"type": "string"}}))
    rows = make_sft_rows(9, 1)  # sources cycle human, synthetic, ai_contaminated: line 3 is the first bad one
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--tag-schema", schema,
              "--train", write_jsonl(tmp_path / "t.jsonl", rows))
    assert res.exit_code == 2
    assert ":3: tag 'tags.source' has value 'ai_contaminated', not one of ['human', 'synthetic']" in res.stderr
    assert "3 bad line(s) in all" in res.stderr
    bad = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--tag-schema",
              write_jsonl(tmp_path / "s2.json", [{"x": 1}]), "--train", tmp_path / "t.jsonl")
    assert bad.exit_code == 2 and "tag schema maps tag keys" in bad.stderr


def test_many_bad_lines_report_the_first_five_and_a_count(tmp_path, store):
    rows = make_sft_rows(20, 1)
    for i in range(2, 20, 2):
        rows[i] = {**rows[i], "output": ""}
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft", "--train", path)
    assert res.exit_code == 2
    assert [f"{path}:{n}:" in res.stderr for n in (3, 5, 7, 9, 11, 13)] == [True] * 5 + [False]
    assert "field 'output' must be a non-empty string" in res.stderr and "9 bad line(s) in all" in res.stderr
    assert not store.exists()


def test_unknown_task_is_a_config_error(tmp_path, store):
    res = run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "nope",
              "--train", write_jsonl(tmp_path / "t.jsonl", make_sft_rows(3, 1)))
    assert res.exit_code == 1 and "nope" in res.stderr


def test_show_and_list(tmp_path, store):
    rows = make_sft_rows(9, 1)
    run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft",
        "--train", write_jsonl(tmp_path / "t.jsonl", rows))
    shown = run("dataset", "show", "ds@v1", "--format", "json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["rows_by_tag"]["train"]["source=human"] == 3
    assert sum(v for k, v in doc["rows_by_tag"]["train"].items() if k.startswith("difficulty=")) == 9
    text = run("dataset", "show", "ds@v1").stdout
    assert "train" in text and "source=ai_contaminated" in text
    listed = json.loads(run("dataset", "list", "--format", "json").stdout)
    assert [(v["ref"], v["num_rows"]) for v in listed] == [("ds@v1", 9)]
    assert "No dataset versions" in run("dataset", "list", "--store", tmp_path / "empty").stdout


def test_verify_ok_and_with_rows(tmp_path, store):
    run("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft",
        "--train", write_jsonl(tmp_path / "t.jsonl", make_sft_rows(9, 1)))
    res = run("dataset", "verify", "ds@v1", "--rows")
    assert res.exit_code == 0 and "ds@v1: OK (1 file(s), 9 rows" in res.stdout
    missing = run("dataset", "verify", "ds@v7")
    assert missing.exit_code == 2 and "available versions of ds: v1" in missing.stderr


def test_classification_diff_counts_relabelled_rows_as_changed(tmp_path, store):
    v1 = [{"text": f"text number {i}", "label": "pos" if i % 2 else "neg", "tags": {"source": "human" if i < 6 else "web"}}
          for i in range(10)]
    v2 = [dict(r) for r in v1]
    v2[7] = {**v2[7], "label": "neg" if v2[7]["label"] == "pos" else "pos"}
    v2[2] = {**v2[2], "tags": {"source": "web"}}
    for version, rows in (("v1", v1), ("v2", v2)):
        run("dataset", "create", "--id", "c", "--version", version, "--task", "classification",
            "--train", write_jsonl(tmp_path / f"{version}.jsonl", rows))
    res = run("dataset", "diff", "c@v1", "c@v2", "--format", "json")
    d = json.loads(res.stdout)
    assert d["splits"]["train"] == {"added": 0, "removed": 0, "changed": 1, "retagged": 1}
    assert d["by_tag"]["train"]["source=web"] == {"added": 0, "removed": 0, "changed": 1, "retagged": 1}
    text = run("dataset", "diff", "c@v1", "c@v2").stdout
    assert "c@v1 -> c@v2" in text and "~1 changed" in text


def _movie_rows(n):
    return [{"instruction": f"Say {i}", "output": f"word{i}",
             "tags": {"movie": f"m{i % 500:03d}", "source": ("human", "synthetic", "web")[i % 3]}} for i in range(n)]


def test_show_and_diff_collapse_a_500_value_tag(tmp_path, store):
    v1 = _movie_rows(600)
    v2 = [dict(r, tags={**r["tags"], "movie": f"m{(i + 7) % 500:03d}"}) if i < 300 else r for i, r in enumerate(v1)]
    for version, rows in (("v1", v1), ("v2", v2)):
        res = run("dataset", "create", "--id", "mv", "--version", version, "--task", "sft",
                  "--train", write_jsonl(tmp_path / f"{version}.jsonl", rows),
                  "--test", write_jsonl(tmp_path / f"{version}-test.jsonl", _movie_rows(50)))
        assert res.exit_code == 0, res.output
    shown = run("dataset", "show", "mv@v1").stdout.splitlines()
    assert len(shown) <= 40, "\n".join(shown)
    assert sum("movie=" in line for line in shown) == 10  # the 5 largest per split
    assert any("... and 495 more movie values (--tags movie --all)" in line for line in shown)
    assert any("... and 45 more movie values" in line for line in shown)
    assert sum("source=" in line for line in shown) == 6  # three values: all shown
    top = [line.split()[0] for line in shown if "movie=" in line][:5]
    assert top == ["movie=m000", "movie=m001", "movie=m002", "movie=m003", "movie=m004"]  # 2 rows each, then by name
    every = run("dataset", "show", "mv@v1", "--tags", "movie", "--all").stdout
    assert every.count("movie=") == 550 and "source=" not in every
    doc = json.loads(run("dataset", "show", "mv@v1", "--tags", "source", "--format", "json").stdout)
    assert set(doc["rows_by_tag"]["train"]) == {"source=human", "source=synthetic", "source=web"}
    bad = run("dataset", "show", "mv@v1", "--tags", "movei")
    assert bad.exit_code == 1 and "--tags: no tag key movei; the version's tag keys: movie, source" in bad.output

    diffed = run("dataset", "diff", "mv@v1", "mv@v2")
    assert diffed.exit_code == 0, diffed.output
    lines = diffed.stdout.splitlines()
    assert len(lines) <= 40, diffed.stdout
    assert any(line.strip().startswith("... and") and "more movie values" in line for line in lines)
    assert "300 retagged" in lines[1]


def _split_rows(version_dir):
    return {s: [json.loads(line) for line in (version_dir / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test") if (version_dir / f"{s}.jsonl").exists()}


def test_automatic_splits_are_seeded_stratified_and_recorded(tmp_path, store):
    from collections import Counter

    rows = make_classification_rows(300, seed=1)
    src = write_jsonl(tmp_path / "all.jsonl", rows)
    args = ("--task", "classification", "--train", src, "--val-fraction", "0.1", "--test-fraction", "0.2",
            "--stratify", "label,tags.source")
    for version, seed in (("a", 0), ("b", 0), ("c", 1)):
        res = run("dataset", "create", "--id", "c", "--version", version, *args, "--split-seed", seed)
        assert res.exit_code == 0, res.output
    a, b, c = (_split_rows(store / "c" / v) for v in "abc")
    assert a == b and a["val"] != c["val"]  # the seed decides, nothing else
    assert sorted(map(json.dumps, a["train"] + a["val"] + a["test"])) == sorted(map(json.dumps, rows))
    strata = Counter((r["label"], r["tags"]["source"]) for r in rows)
    for split, fraction in (("val", 0.1), ("test", 0.2)):
        got = Counter((r["label"], r["tags"]["source"]) for r in a[split])
        assert all(abs(got[k] - n * fraction) <= 0.5 for k, n in strata.items()), (split, got, strata)
    order = {json.dumps(r): i for i, r in enumerate(rows)}
    assert all([order[json.dumps(r)] for r in a[s]] == sorted(order[json.dumps(r)] for r in a[s]) for s in a)
    manifest = json.loads((store / "c" / "a" / "manifest.json").read_text())
    assert manifest["split"] == {"from": "train", "method": "stratified", "seed": 0,
                                 "fractions": {"val": 0.1, "test": 0.2}, "stratify_by": ["label", "tags.source"],
                                 "rows": {"train": len(a["train"]), "val": len(a["val"]), "test": len(a["test"])}}
    assert run("dataset", "verify", "c@a", "--rows").exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (("--val", "VAL", "--val-fraction", "0.1"), "--val-fraction: the input already has a val split"),
    (("--val-fraction", "1.5"), "--val-fraction 1.5: must be between 0 and 1"),
    (("--val-fraction", "0.6", "--test-fraction", "0.5"), "must leave rows for training"),
    (("--stratify", "label"), "--stratify needs --val-fraction or --test-fraction"),
    (("--val-fraction", "0.1", "--stratify", "meta.x"), "--stratify 'meta.x': use a row field"),
])
def test_bad_split_options_are_one_line_and_exit_1(tmp_path, store, extra, message):
    src = write_jsonl(tmp_path / "all.jsonl", make_classification_rows(20, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", make_classification_rows(4, seed=2))
    res = run("dataset", "create", "--id", "c", "--version", "v1", "--task", "classification", "--train", src,
              *[str(val) if a == "VAL" else a for a in extra])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not (store / "c").exists()
