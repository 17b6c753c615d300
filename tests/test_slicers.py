"""Slicers and the ``--slice-by`` syntax: tag, crossed and length slices partition rows as documented."""

from __future__ import annotations

import itertools

import pytest

from verifily_core.errors import ConfigError, EvalError
from verifily_core.evaluation.slicing import compute_slices, tag_keys
from verifily_core.slices import parse_slice_by, parse_slice_spec, slice_keys
from verifily_slicers.length import LengthSlicer
from verifily_slicers.tags import CrossSlicer, TagSlicer

SLICERS = {"tag": TagSlicer(), "cross": CrossSlicer(), "length": LengthSlicer()}


def _rows():
    sources, levels = ["human", "synthetic", "ai"], ["easy", "hard"]
    rows = [{"tags": {"source": sources[i % 3], "difficulty": levels[(i // 3) % 2]}, "reference": "w " * (i + 1)}
            for i in range(14)]
    rows[5]["tags"].pop("difficulty")
    rows[6]["tags"]["difficulty"] = None
    return rows


@pytest.mark.parametrize("text, slicer, keys", [
    ("source", None, ("source",)),
    (" source ", None, ("source",)),
    ("source&difficulty", None, ("source", "difficulty")),
    ("source+difficulty+lang", None, ("source", "difficulty", "lang")),
    ("length:", "length", ()),
    ("length:input:tertiles", "length", ("input:tertiles",)),
    ("tag:source", "tag", ("source",)),
    ("first_letter:source", "first_letter", ("source",)),
])
def test_slice_spec_syntax(text, slicer, keys):
    spec = parse_slice_spec(text)
    assert (spec.slicer, spec.keys) == (slicer, keys)


def test_slice_by_lists_and_errors():
    assert [s.text for s in parse_slice_by("source, difficulty,source")] == ["source", "difficulty"]
    assert parse_slice_by(None) == [] and parse_slice_by([]) == []
    with pytest.raises(ConfigError, match="empty key"):
        parse_slice_spec("source&")
    with pytest.raises(ConfigError, match="unknown slicer 'nope'"):
        compute_slices(_rows(), parse_slice_by("nope:x"), SLICERS)
    assert tag_keys("source&difficulty,length:input,lang") == ["source", "difficulty", "lang"]
    assert tag_keys("source+difficulty,length:input", SLICERS) == ["source", "difficulty"]
    assert slice_keys("source=human&difficulty=a=b") == ("source", "difficulty")


def test_tag_slices_with_missing_values():
    rows = _rows()
    got = TagSlicer().slices(rows, ["difficulty"])
    assert got == {"difficulty=easy": [0, 1, 2, 7, 8, 12, 13], "difficulty=hard": [3, 4, 9, 10, 11],
                   "difficulty=<missing>": [5, 6]}  # largest first, <missing> last
    # sizes 5, 5, 4: by size, then by name
    assert list(TagSlicer().slices(rows, ["source"])) == ["source=human", "source=synthetic", "source=ai"]


def test_non_string_and_list_values():
    rows = [{"tags": {"v": True}}, {"tags": {"v": 3}}, {"tags": {"v": ["a", "b", "a"]}}, {"tags": {"v": []}}, {}]
    assert TagSlicer().slices(rows, ["v"]) == {"v=<missing>": [3, 4], "v=3": [1], "v=a": [2], "v=b": [2],
                                               "v=true": [0]}


def test_crossed_slices_partition_the_rows_exactly():
    rows = _rows()
    got = CrossSlicer().slices(rows, ["source", "difficulty"])
    members = sorted(itertools.chain.from_iterable(got.values()))
    assert members == list(range(len(rows)))  # every row in exactly one slice
    for name, idx in got.items():
        want = dict(part.split("=") for part in name.split("&"))
        for i in range(len(rows)):
            tags = rows[i]["tags"]
            in_slice = all((tags.get(k) if tags.get(k) is not None else "<missing>") == v for k, v in want.items())
            assert in_slice == (i in idx), (name, i)
    assert got["source=ai&difficulty=<missing>"] == [5] and got["source=human&difficulty=<missing>"] == [6]
    # each crossed slice is the intersection of the single-key slices
    single = TagSlicer().slices(rows, ["source", "difficulty"])
    for name, idx in got.items():
        a, b = name.split("&")
        assert set(idx) == set(single[a]) & set(single[b])


def test_length_buckets_thresholds_and_tertiles():
    rows = [{"reference": " ".join(["w"] * n), "input": "x " * (20 - n), "tags": {}} for n in (1, 9, 10, 49, 50, 80)]
    assert LengthSlicer().slices(rows, [""]) == {"length=short": [0, 1], "length=medium": [2, 3],
                                                 "length=long": [4, 5]}
    assert LengthSlicer().slices(rows, ["reference:2:50"]) == {"length=short": [0], "length=medium": [1, 2, 3],
                                                              "length=long": [4, 5]}
    # tertiles: LO, HI = sorted lengths at n // 3 = 2 and 2n // 3 = 4 -> 10 and 50
    assert LengthSlicer().slices(rows, ["reference:tertiles"]) == LengthSlicer().slices(rows, ["reference:10:50"])
    inputs = LengthSlicer().slices(rows, ["input:5:15"])
    assert set(inputs) == {"input_length=short", "input_length=medium", "input_length=long"}
    assert inputs == {"input_length=long": [0], "input_length=medium": [1, 2], "input_length=short": [3, 4, 5]}
    for bad in ("words", "reference:5", "reference:9:3", "reference:a:b"):
        with pytest.raises(ConfigError):
            LengthSlicer().slices(rows, [bad])


def test_length_of_input_falls_back_to_row_fields():
    rows = [{"reference": "out", "row": {"instruction": "one two three", "output": "out", "tags": {"k": "v"}}}]
    assert LengthSlicer().slices(rows, ["input:3:5"]) == {"input_length=medium": [0]}


def test_two_specs_producing_one_name_is_an_error():
    with pytest.raises(ConfigError, match="slice 'source=human' is produced by both 'source' and 'tag:source'"):
        compute_slices(_rows(), parse_slice_by(["source", "tag:source"]), SLICERS)


def test_slicer_returning_bad_indices_is_an_eval_error():
    class Bad(TagSlicer):
        def slices(self, rows, keys):
            return {"x=1": [0, 99]}

    with pytest.raises(EvalError, match="slicer 'bad' returned an index outside"):
        compute_slices(_rows(), parse_slice_by("bad:x"), {"bad": Bad()})


def test_dataset_diffs_label_tag_values_as_slices_are_named():
    """A bool, a number, a list and a null tag: the diff's labels are the slice names the tag slicer makes."""
    from verifily_core.slices import tag_labels

    rows = [{"tags": {"gold": True, "n": 3, "topics": ["a", "b"], "src": None}}]
    names = set(TagSlicer().slices(rows, ["gold", "n", "topics", "src"]))
    assert set(tag_labels(rows[0]["tags"])) == names == {"gold=true", "n=3", "topics=a", "topics=b", "src=<missing>"}
