"""Progress bars: on a terminal only, silent with ``--quiet`` or when piped, rows counted per batch."""

from __future__ import annotations

import io
import json

import pytest

from verifily_core import console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch):
    monkeypatch.delenv("VERIFILY_PROGRESS", raising=False)
    yield
    console.set_quiet(False)


def test_bars_are_drawn_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(console.sys, "stderr", _Terminal())
    assert console.progress_enabled()
    monkeypatch.setattr(console.sys, "stderr", io.StringIO())  # a pipe
    assert not console.progress_enabled()
    monkeypatch.setenv("VERIFILY_PROGRESS", "1")
    assert console.progress_enabled()


def test_a_batch_loop_shows_rows_and_rate_and_yields_every_start(monkeypatch, capsys):
    monkeypatch.setenv("VERIFILY_PROGRESS", "1")
    assert list(console.progress(range(0, 10, 4), label="Predicting")) == [0, 4, 8]
    err = capsys.readouterr().err
    assert "Predicting" in err and "/10 " in err and "rows/s" in err


def test_quiet_gets_no_bar(monkeypatch, capsys):
    monkeypatch.setattr(console.sys, "stderr", _Terminal())
    console.set_quiet(True)
    assert not console.progress_enabled()
    assert list(console.progress(range(3), label="Predicting")) == [0, 1, 2]


def test_verifily_progress_0_turns_bars_off_on_a_terminal(monkeypatch):
    monkeypatch.setattr(console.sys, "stderr", _Terminal())
    monkeypatch.setenv("VERIFILY_PROGRESS", "0")
    assert not console.progress_enabled()


def test_the_quiet_flag_reaches_the_console_and_json_output_stays_clean(verifily_cli, tmp_path):
    res = verifily_cli("--quiet", "plugins", "--format", "json")
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)
    assert console.is_quiet()
    console.set_quiet(False)
