"""The offline demo's ingredients: a small instruction-following base model and two dataset
versions whose ``source=ai_contaminated`` rows are broken in v1 and repaired in v2.

    python -m verifily_core.testing.demo prepare --dir .verifily/demo

writes ``models/demo-llama`` (cached: built once), ``data/v1/``, ``data/v2/`` (train, val) and
the shared clean ``data/test.jsonl``. In both versions the ``human`` and ``synthetic`` rows
ask to repeat a word and the ``ai_contaminated`` rows ask for the word in uppercase; in v1
those outputs are wrong words (the contamination), in v2 they are correct.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from verifily_core.testing.data import WORDS, write_jsonl
from verifily_core.testing.tiny_models import build_tiny_model

REPEAT, UPPER = "Repeat the word.", "Write the word in uppercase."
PRETRAIN_STEPS = 300


def _prompt(instruction: str, word: str) -> str:
    return f"### Instruction:\n{instruction}\n\n### Input:\n{word}\n\n### Response:\n"


def base_corpus() -> list[str]:
    """Generic instruction-following text the base model is pretrained on (all skills, all words)."""
    texts = []
    for w in WORDS:
        texts += [_prompt(REPEAT, w) + w, _prompt(UPPER, w) + w.upper(),
                  _prompt("Write the word in lowercase.", w.upper()) + w,
                  _prompt("Repeat the word twice.", w) + f"{w} {w}"]
    return texts


def demo_rows(n: int, seed: int, contaminated: bool) -> list[dict[str, Any]]:
    """Rows cycling through the three sources; ``contaminated`` breaks the ai_contaminated outputs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word, source = rng.choice(WORDS), ("human", "synthetic", "ai_contaminated")[i % 3]
        if source == "ai_contaminated":
            instruction, output = UPPER, word.upper()
            if contaminated:
                output = WORDS[(WORDS.index(word) + 7) % len(WORDS)]
        else:
            instruction, output = REPEAT, word
        rows.append({"instruction": instruction, "input": word, "output": output,
                     "tags": {"source": source, "difficulty": rng.choice(("easy", "medium", "hard"))}})
    return rows


def prepare(directory: str | Path, train_rows: int = 150, test_rows: int = 90) -> dict[str, Path]:
    """Build (or reuse) the base model and write the demo data; returns the paths."""
    root = Path(directory)
    model = root / "models" / "demo-llama"
    if not (model / "model.safetensors").is_file():
        import torch

        torch.set_num_threads(1)
        build_tiny_model("llama", model, seed=0, texts=base_corpus(), pretrain_steps=PRETRAIN_STEPS)
    data = root / "data"
    for version, broken in (("v1", True), ("v2", False)):
        write_jsonl(data / version / "train.jsonl", demo_rows(train_rows, seed=1, contaminated=broken))
        write_jsonl(data / version / "val.jsonl", demo_rows(30, seed=5, contaminated=broken))
    write_jsonl(data / "test.jsonl", demo_rows(test_rows, seed=2, contaminated=False))
    return {"model": model, "data": data}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``prepare --dir DIR``."""
    parser = argparse.ArgumentParser(description="Prepare the offline demo (base model and datasets).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    for name, path in prepare(args.dir).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
