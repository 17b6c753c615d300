"""`verifily dataset create` from CSV, TSV, Parquet and JSON arrays: stored as the JSONL the same
rows make (same files, same content hash), with a column mapping; bad inputs are one line."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from verifily_core.cli import cli
from verifily_core.testing import write_jsonl

REVIEWS = [("great film, loved it", "pos", "human"), ("awful \u2013 \"boring\"", "neg", "web"),
           ("fine\tI guess", "pos", "web"), ("bad\nending", "neg", "human")]


@pytest.fixture
def store(verifily_store):
    return verifily_store


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def expected_rows():
    return [{"text": t, "label": lab, "tags": {"source": src}} for t, lab, src in REVIEWS]


def write_table(path, fmt):
    header = ["review", "sentiment", "origin"]
    if fmt in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(header)
            writer.writerows(REVIEWS)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({h: [r[i] for r in REVIEWS] for i, h in enumerate(header)}), path)
    else:
        path.write_text(json.dumps([dict(zip(header, r)) for r in REVIEWS]), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "json"])
def test_tables_are_stored_as_the_jsonl_of_the_same_rows(tmp_path, store, fmt):
    reference = run("dataset", "create", "--id", "ref", "--version", "v1", "--task", "classification",
                    "--train", write_jsonl(tmp_path / "rows.jsonl", expected_rows()))
    assert reference.exit_code == 0, reference.output
    table = write_table(tmp_path / f"reviews.{fmt}", fmt)
    res = run("dataset", "create", "--id", "tab", "--version", "v1", "--task", "classification", "--train", table,
              "--map", "text=review,label=sentiment,tags.source=origin")
    assert res.exit_code == 0, res.output
    a = json.loads((store / "ref" / "v1" / "manifest.json").read_text())
    b = json.loads((store / "tab" / "v1" / "manifest.json").read_text())
    assert b["content_hash"] == a["content_hash"] and b["tag_keys"] == ["source"]
    assert (store / "tab" / "v1" / "train.jsonl").read_bytes() == (store / "ref" / "v1" / "train.jsonl").read_bytes()


def test_unmapped_columns_keep_their_names_and_empty_cells_are_left_out(tmp_path, store):
    path = tmp_path / "rows.csv"
    path.write_text("text,label,tags.source,note\nnice one,pos,human,\nsad one,neg,,seen twice\n", encoding="utf-8")
    res = run("dataset", "create", "--id", "c", "--version", "v1", "--task", "classification", "--train", path)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (store / "c" / "v1" / "train.jsonl").read_text().splitlines()]
    assert rows == [{"text": "nice one", "label": "pos", "tags": {"source": "human"}},
                    {"text": "sad one", "label": "neg"}]
    assert "Columns left out (no field of task 'classification'" in res.stderr and "note" in res.stderr


def test_a_bad_row_names_the_input_file_and_record(tmp_path, store):
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nnice one,pos\nno label here,\n", encoding="utf-8")
    res = run("dataset", "create", "--id", "c", "--version", "v1", "--task", "classification", "--train", path)
    assert res.exit_code == 2 and f"{path}:3: missing required field 'label'" in res.output


@pytest.mark.parametrize("name, content, extra, code, message", [
    ("r.csv", "review,sentiment\nok,pos\n", ("--map", "text=review,label=mood"), 2,
     "r.csv:2: no column 'mood' (--map label=mood); its columns: review, sentiment"),
    ("r.xlsx", "x", (), 2, "unsupported file type '.xlsx'"),
    ("r.csv", "text,label\nok,pos,extra\n", (), 2, "r.csv:2: more cells than the header has columns"),
    ("r.json", '{"text": "x"}', (), 2, "expected a JSON array of objects, got dict"),
    ("r.csv", "text,label\nok,pos\n", ("--map", "text"), 1, "--map 'text': write FIELD=COLUMN"),
    ("r.parquet", "not parquet", (), 2, "not a readable Parquet file"),
])
def test_bad_inputs_are_one_line(tmp_path, store, name, content, extra, code, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    res = run("dataset", "create", "--id", "c", "--version", "v1", "--task", "classification", "--train", path, *extra)
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (store / "c").exists()


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_conversations_from_parquet_and_json_arrays_hash_as_their_jsonl(tmp_path, store, fmt):
    from verifily_core.testing import make_chat_rows

    rows = make_chat_rows(6)
    reference = run("dataset", "create", "--id", "ref", "--version", "v1", "--task", "sft",
                    "--train", write_jsonl(tmp_path / "rows.jsonl", rows))
    assert reference.exit_code == 0, reference.output
    records = [{"conversation": r["messages"], "origin": r["tags"]["source"], "level": r["tags"]["difficulty"]}
               for r in rows]
    path = tmp_path / f"chats.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    res = run("dataset", "create", "--id", "tab", "--version", "v1", "--task", "sft", "--train", path,
              "--map", "messages=conversation,tags.source=origin,tags.difficulty=level")
    assert res.exit_code == 0, res.output
    a = json.loads((store / "ref" / "v1" / "manifest.json").read_text())
    b = json.loads((store / "tab" / "v1" / "manifest.json").read_text())
    assert b["content_hash"] == a["content_hash"]


def test_a_conversation_in_a_csv_cell_is_refused_with_what_to_do(tmp_path, store):
    path = tmp_path / "chats.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}]"\n', encoding="utf-8")
    res = run("dataset", "create", "--id", "c", "--version", "v1", "--task", "sft", "--train", path)
    assert res.exit_code == 2 and "not text" in res.output and "Parquet" in res.output


def test_label_sets_from_csv_cells_and_parquet_lists_hash_as_their_jsonl(tmp_path, store):
    rows = [{"text": "apple river", "labels": ["fruit", "water"]}, {"text": "the day", "labels": []},
            {"text": "a chair", "labels": ["home"]}]
    assert run("dataset", "create", "--id", "ref", "--version", "v1", "--task", "classification",
               "--train", write_jsonl(tmp_path / "rows.jsonl", rows)).exit_code == 0
    csv_path = tmp_path / "rows.csv"  # a JSON array or ;-separated values; [] for no label
    csv_path.write_text('review,topics\napple river,"[""fruit"", ""water""]"\nthe day,[]\na chair, home \n',
                        encoding="utf-8")
    res = run("dataset", "create", "--id", "csv", "--version", "v1", "--task", "classification", "--train", csv_path,
              "--map", "text=review,labels=topics")
    assert res.exit_code == 0, res.output
    semi = tmp_path / "semi.csv"  # an unmapped column named like the list field fills it
    semi.write_text("text,labels\napple river,fruit; water\nthe day,[]\na chair,home\n", encoding="utf-8")
    assert run("dataset", "create", "--id", "semi", "--version", "v1", "--task", "classification",
               "--train", semi).exit_code == 0
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [r["text"] for r in rows], "labels": [r["labels"] for r in rows]}),
                   tmp_path / "rows.parquet")
    assert run("dataset", "create", "--id", "pq", "--version", "v1", "--task", "classification",
               "--train", tmp_path / "rows.parquet").exit_code == 0
    want = (store / "ref" / "v1" / "train.jsonl").read_bytes()
    for name in ("csv", "semi", "pq"):
        assert (store / name / "v1" / "train.jsonl").read_bytes() == want, name
    bad = tmp_path / "bad.csv"
    bad.write_text('text,labels\napple,"[fruit"\n', encoding="utf-8")
    res = run("dataset", "create", "--id", "bad", "--version", "v1", "--task", "classification", "--train", bad)
    assert res.exit_code == 2 and f"{bad}:2: '[fruit' starts like a JSON array but is not one" in res.output
