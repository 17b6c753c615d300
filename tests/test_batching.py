"""Prediction in batches of similar length: fewer padded positions, results in input order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from verifily_core.batching import length_sorted_batches, map_sorted, token_budget_batches


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 9))
def test_every_row_once_in_input_order(lengths, batch_size):
    seen = []
    out = map_sorted(lengths, batch_size, lambda batch: (seen.append(batch), [("row", i) for i in batch])[1])
    assert out == [("row", i) for i in range(len(lengths))]
    assert sorted(i for b in seen for i in b) == list(range(len(lengths)))
    assert all(len(b) <= batch_size for b in seen)


def test_sorted_batches_pad_less_than_input_order():
    rng = random.Random(0)
    lengths = [rng.choice([5, 8, 12, 60, 200]) for _ in range(300)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    in_order = [list(range(i, min(i + 16, 300))) for i in range(0, 300, 16)]
    assert padded(length_sorted_batches(lengths, 16)) < 0.5 * padded(in_order)
    assert length_sorted_batches([3, 9, 9, 1], 2) == [[1, 2], [0, 3]]  # longest first, ties in input order


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 200))
def test_token_budget_batches_hold_every_row_once_within_the_budget(lengths, budget):
    batches = token_budget_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [i for b in batches for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    for b, after in zip(batches, batches[1:]):  # a batch closes only when the next row would not fit
        assert (len(b) + 1) * max(lengths[i] for i in b) > budget


def test_token_budget_batches_hold_more_short_rows():
    assert token_budget_batches([10, 2, 10, 2, 2, 2], 20) == [[0, 2], [1, 3, 4, 5]]


def test_a_labelled_map_shows_rows_done_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("VERIFILY_PROGRESS", "1")
    assert map_sorted([3, 1, 2], 2, lambda batch: batch, "Predicting") == [0, 1, 2]
    err = capsys.readouterr().err
    assert "Predicting" in err and "/3 " in err  # rows out of 3
    monkeypatch.setenv("VERIFILY_PROGRESS", "0")
    map_sorted([3, 1, 2], 2, lambda batch: batch, "Predicting")
    assert capsys.readouterr().err == ""
