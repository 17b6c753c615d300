"""Start-up cost of the CLI: `verifily --help` and `verifily train --dry-run` vs `python -c pass`.

Prints the median wall time of each command over N interleaved runs, and each as a ratio
of the bare interpreter start measured in the same run. Target: `--help` and the config-only
dry run (`--no-data-check`) under 0.3 s; the full dry run also reads a 100-row train file
(hashes and validates every row), so its difference to the config-only one is the data check.

    .venv/bin/python benchmarks/bench_cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = ("task: sft\nbase_model: org/model\ndata_paths:\n  train: data/train.jsonl\n"
          "eval:\n  slice_by_tags: [source]\n")
ENTRY = "from verifily_core.cli import main; main()"


def _time(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from verifily_core.testing.data import make_sft_rows, write_jsonl

        (Path(tmp) / "train.yaml").write_text(CONFIG)
        write_jsonl(Path(tmp) / "data" / "train.jsonl", make_sft_rows(100))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "verifily --help": [sys.executable, "-c", ENTRY, "--help"],
            "train --dry-run --no-data-check": [sys.executable, "-c", ENTRY, "train", "--dry-run", "--no-data-check"],
            "train --dry-run": [sys.executable, "-c", ENTRY, "train", "--dry-run"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for cmd in commands.values():  # warm-up (file-system caches, .pyc files)
            _time(cmd, tmp)
        for _ in range(args.runs):
            for name, cmd in commands.items():
                times[name].append(_time(cmd, tmp))
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<32} {'median s':>9} {'vs python -c pass':>18}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<32} {med:>9.3f} {med / base:>17.1f}x")


if __name__ == "__main__":
    main()
