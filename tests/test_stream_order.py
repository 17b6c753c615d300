"""The row order of streamed training (verifily_core.datasets.stream): lazy, seeded, sharded, resumable."""

from __future__ import annotations

import json

import pytest

from verifily_core.config import TrainConfig
from verifily_core.datasets.stream import RowStream
from verifily_core.errors import DataError
from verifily_core.testing import write_jsonl

N = 23  # rows per epoch: windows of 5 leave a partial one


@pytest.fixture
def split(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"i": i} for i in range(N)])
    text = path.read_text().replace('{"i": 7}\n', '{"i": 7}\n\n')  # a blank line is not a row
    path.write_text(text)
    return path


def take(stream, n, start=0):
    out = []
    for position, row in stream.rows(start):
        out.append((position, row["i"]))
        if len(out) == n:
            return out
    return out


def test_without_shuffling_the_stream_is_the_file_order_epoch_after_epoch(split):
    got = take(RowStream(split, N, seed=1, shuffle_buffer=0), 2 * N + 3)
    assert [p for p, _ in got] == list(range(2 * N + 3))
    assert [i for _, i in got] == [*range(N), *range(N), 0, 1, 2]


def test_shuffling_permutes_each_window_by_the_seed_and_epoch(split):
    stream = RowStream(split, N, seed=1, shuffle_buffer=5)
    got = [i for _, i in take(stream, 2 * N)]
    for epoch in range(2):
        rows = got[epoch * N:(epoch + 1) * N]
        for w in range(0, N, 5):
            assert sorted(rows[w:w + 5]) == list(range(w, min(w + 5, N)))  # rows stay in their window
    assert got[:N] != list(range(N)) and got[:N] != got[N:]  # shuffled, and differently each epoch
    assert got == [i for _, i in take(RowStream(split, N, seed=1, shuffle_buffer=5), 2 * N)]  # same seed, same order
    assert got != [i for _, i in take(RowStream(split, N, seed=2, shuffle_buffer=5), 2 * N)]


@pytest.mark.parametrize("start", [0, 4, 5, 11, N - 1, N, N + 7, 3 * N + 2])
def test_a_stream_started_at_a_position_is_the_tail_of_the_whole_stream(split, start):
    whole = take(RowStream(split, N, seed=3, shuffle_buffer=5), start + 30)
    assert take(RowStream(split, N, seed=3, shuffle_buffer=5), 30, start=start) == whole[start:]


@pytest.mark.parametrize("start", [0, 9])
def test_ranks_take_every_world_size_th_row_and_together_the_whole_stream(split, start):
    whole = take(RowStream(split, N, seed=3, shuffle_buffer=5), start + 60)[start:]
    ranks = [take(RowStream(split, N, seed=3, shuffle_buffer=5, rank=r, world_size=3), 20, start=start)
             for r in range(3)]
    assert sorted(x for rank in ranks for x in rank) == whole
    for r, rows in enumerate(ranks):
        assert [p for p, _ in rows] == [start + r + 3 * j for j in range(20)]


def test_rows_are_read_lazily_with_at_most_one_window_held(tmp_path):
    """Instrumented line source: at every row handed out, the lines read ahead of it are at
    most one window; the file is never read whole."""
    total, window = 10_000, 16
    read = {"lines": 0}

    def lines():
        for i in range(total):
            read["lines"] += 1
            yield i + 1, json.dumps({"i": i})

    stream = RowStream(tmp_path / "big.jsonl", total, seed=0, shuffle_buffer=window, lines=lines)
    for handed, (_, row) in enumerate(stream.rows(), start=1):
        assert read["lines"] - handed < window
        if handed == 100:
            break
    assert read["lines"] <= 100 + window


def test_a_file_that_lost_rows_since_it_was_verified_is_a_data_error(split):
    with pytest.raises(DataError, match="has 23 rows, the dataset recorded 30"):
        take(RowStream(split, 30, seed=0, shuffle_buffer=0), 40)


def test_streaming_enters_the_config_hash_only_when_set():
    base = TrainConfig(task="sft", base_model="m", dataset_version="d@v1")
    assert "streaming" not in base.hashable_dict()["training"]
    assert "shuffle_buffer" not in base.hashable_dict()["training"]
    on = base.merge_overrides({"training.streaming": True})
    assert on.hashable_dict()["training"]["streaming"] is True and on.to_hash() != base.to_hash()
    assert base.merge_overrides({"training.shuffle_buffer": 50}).to_hash() != base.to_hash()


@pytest.mark.parametrize("training, message", [
    ({"streaming": True}, "$.training.max_steps: training.streaming needs max_steps"),
    ({"streaming": True, "max_steps": 5, "group_by_length": True}, "$.training.group_by_length: not with"),
    ({"streaming": True, "max_steps": 5, "dataloader_num_workers": 2}, "$.training.dataloader_num_workers: must be 0"),
    ({"streaming": True, "max_steps": 5, "shuffle_buffer": -1}, "$.training.shuffle_buffer: must be >= 0"),
])
def test_what_streaming_cannot_do_is_a_config_problem(training, message):
    cfg = TrainConfig.from_dict({"task": "sft", "base_model": "org/m", "dataset_version": "d@v1",
                                 "training": training})
    assert any(p.startswith(message) for p in cfg.problems()), cfg.problems()
