"""The offline demo's ingredients: a small base model per task and two dataset versions whose
``source=ai_contaminated`` rows are broken in v1 and repaired in v2. ``demo.sh`` runs it; it
lives beside the demo's configs and is not part of the installed package.

    python examples/demo/demo.py prepare --dir .verifily/demo --task sft
    python examples/demo/demo.py prepare --dir .verifily/demo --task classification
    python examples/demo/demo.py hard --run RUN_DIR -n 5

``prepare`` writes the task's base model under ``models/`` (built once, rebuilt only when its
recipe changes), ``data/<task>/v1/``, ``data/<task>/v2/`` (train, val) and the shared clean
``data/<task>/test.jsonl``:

- ``sft`` (``models/demo-llama``, a Llama-architecture causal LM pretrained briefly on generic
  instruction text): ``human`` and ``synthetic`` rows ask to repeat a word, ``ai_contaminated``
  rows ask for the word in uppercase; in v1 those outputs are wrong words, in v2 correct.
- ``classification`` (``models/demo-bert``, a BERT-architecture encoder pretrained briefly
  with masked language modelling): sentiment reviews labelled ``pos``/``neg``. The
  ``ai_contaminated`` reviews are written in their own vocabulary, and in v1 most of their
  labels are wrong; v2 relabels them.

``hard`` prints a run's hardest evaluation examples as a short table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Callable

import attrs

from verifily_core.testing import tiny_models
from verifily_core.testing.data import NEGATIVE, NEUTRAL, POSITIVE, SOURCES, WORDS, corpus, write_jsonl
from verifily_core.testing.tiny_models import build_tiny_model

TASKS = ("sft", "classification")
REPEAT, UPPER = "Repeat the word.", "Write the word in uppercase."
# The vocabulary of the machine-written reviews (the ai_contaminated source of the classification demo).
AI_POSITIVE = ("superb", "brilliant", "delightful", "flawless", "stellar", "charming")
AI_NEGATIVE = ("dreadful", "horrible", "dismal", "boring", "mediocre", "disappointing")
AI_NEUTRAL = ("overall", "truly", "experience", "product", "quality", "certainly", "delivered", "absolutely")


def _prompt(instruction: str, word: str) -> str:
    return f"### Instruction:\n{instruction}\n\n### Input:\n{word}\n\n### Response:\n"


def base_corpus() -> list[str]:
    """Generic instruction-following text the SFT base model is pretrained on (all skills, all words)."""
    texts = []
    for w in WORDS:
        texts += [_prompt(REPEAT, w) + w, _prompt(UPPER, w) + w.upper(),
                  _prompt("Write the word in lowercase.", w.upper()) + w,
                  _prompt("Repeat the word twice.", w) + f"{w} {w}"]
    return texts


def review_corpus() -> list[str]:
    """Unlabelled review-like text the classification encoder is pretrained on (every word used)."""
    rng = random.Random(0)
    texts = []
    for cues, fillers in ((POSITIVE + NEGATIVE, NEUTRAL), (AI_POSITIVE + AI_NEGATIVE, AI_NEUTRAL)):
        for cue in cues:
            for _ in range(4):
                words = rng.sample(fillers, 4)
                words.insert(rng.randrange(5), cue)
                texts.append(" ".join(words))
            texts.append(f"not {cue} " + " ".join(rng.sample(fillers, 3)))
    return texts


def demo_rows(n: int, seed: int, contaminated: bool) -> list[dict[str, Any]]:
    """SFT rows cycling through the three sources; ``contaminated`` breaks the ai_contaminated outputs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word, source = rng.choice(WORDS), SOURCES[i % 3]
        if source == "ai_contaminated":
            instruction, output = UPPER, word.upper()
            if contaminated:
                output = WORDS[(WORDS.index(word) + 7) % len(WORDS)]
        else:
            instruction, output = REPEAT, word
        rows.append({"instruction": instruction, "input": word, "output": output,
                     "tags": {"source": source, "difficulty": rng.choice(("easy", "medium", "hard"))}})
    return rows


def review_rows(n: int, seed: int, contaminated: bool, wrong_share: float = 0.8,
                hard_share: float = 1 / 3) -> list[dict[str, Any]]:
    """Classification rows cycling through the three sources. ``ai_contaminated`` reviews use
    their own vocabulary; with ``contaminated`` about ``wrong_share`` of their labels are wrong.
    ``difficulty`` is ``hard`` for a review that also holds a negated cue of the other sentiment."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        source = SOURCES[i % 3]
        pos, neg, fillers = (AI_POSITIVE, AI_NEGATIVE, AI_NEUTRAL) if source == "ai_contaminated" else \
            (POSITIVE, NEGATIVE, NEUTRAL)
        positive = rng.random() < 0.5
        words = rng.sample(fillers, 4)
        words.insert(rng.randrange(5), rng.choice(pos if positive else neg))
        difficulty = "hard" if rng.random() < hard_share else "easy"
        if difficulty == "hard":  # a negated opposite cue first, the deciding cue repeated last
            words.insert(0, "not " + rng.choice(neg if positive else pos))
            words.append(rng.choice(pos if positive else neg))
        label = "pos" if positive else "neg"
        wrong = rng.random() < wrong_share  # drawn for every row, so v1 and v2 share their texts
        if contaminated and source == "ai_contaminated" and wrong:
            label = "neg" if positive else "pos"
        rows.append({"text": " ".join(words), "label": label, "tags": {"source": source, "difficulty": difficulty}})
    return rows


@attrs.frozen
class Recipe:
    """How one task's demo is built: its base model (name, architecture, pretraining corpus and
    steps) and its rows (generator and split sizes)."""

    model: str
    kind: str
    corpus: Callable[[], list[str]]
    steps: int
    rows: Callable[..., list[dict[str, Any]]]
    train: int
    val: int
    test: int

    def model_key(self) -> str:
        """A digest of everything the base model is built from (its cache key), the model
        builder's own code included."""
        builder = Path(tiny_models.__file__).read_bytes()
        spec = {"kind": self.kind, "steps": self.steps, "corpus": [*corpus(), *self.corpus()], "seed": 0,
                "builder": hashlib.sha256(builder).hexdigest()}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


RECIPES = {
    "sft": Recipe("demo-llama", "llama", base_corpus, 600, demo_rows, train=150, val=30, test=90),
    "classification": Recipe("demo-bert", "bert", review_corpus, 1000, review_rows, train=240, val=60, test=150),
}


def stale_versions(store: str | Path, dataset_id: str, data: Path) -> list[str]:
    """Versions of ``dataset_id`` already in ``store`` whose files differ from the demo data in
    ``data`` (``v1/``, ``v2/``, ``test.jsonl``): made by an older demo."""
    from verifily_core.datasets.store import DatasetStore
    from verifily_core.hashing import sha256_file

    stale = []
    for dv in DatasetStore(store).versions(dataset_id):
        expected = {"train": data / dv.version / "train.jsonl", "val": data / dv.version / "val.jsonl",
                    "test": data / "test.jsonl"}
        recorded = {f.split: f.sha256 for f in dv.files}
        if dv.version in ("v1", "v2") and recorded != {k: sha256_file(p) for k, p in expected.items()}:
            stale.append(dv.ref)
    return stale


def prepare(directory: str | Path, task: str = "sft", store: str | Path | None = None,
            dataset_id: str | None = None) -> dict[str, Path]:
    """Build (or reuse) the task's base model and write its demo data; returns the paths.

    With ``store`` and ``dataset_id``, a version of that dataset already in the store with other
    data is an error (versions are immutable, so the demo would otherwise train on the old rows)."""
    recipe = RECIPES[task]
    root = Path(directory)
    model = root / "models" / recipe.model
    stamp = model / "demo-recipe.sha256"
    key = recipe.model_key()
    if not (stamp.is_file() and stamp.read_text().strip() == key):
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(1)
        build_tiny_model(recipe.kind, model, seed=0, texts=recipe.corpus(), pretrain_steps=recipe.steps)
        stamp.write_text(key + "\n")
    data = root / "data" / task
    for version, broken in (("v1", True), ("v2", False)):
        write_jsonl(data / version / "train.jsonl", recipe.rows(recipe.train, seed=1, contaminated=broken))
        write_jsonl(data / version / "val.jsonl", recipe.rows(recipe.val, seed=5, contaminated=broken))
    write_jsonl(data / "test.jsonl", recipe.rows(recipe.test, seed=2, contaminated=False))
    stale = stale_versions(store, dataset_id, data) if store and dataset_id else []
    if stale:
        raise SystemExit(f"demo: {', '.join(stale)} in {store} hold data of an older demo; remove that store "
                         f"(chmod -R u+w {store} && rm -rf {store}) and run the demo again")
    return {"model": model, "data": data}


def hard_examples_table(run_dir: str | Path, n: int = 5) -> str:
    """The ``n`` hardest examples of a run's ``eval/hard_examples.jsonl`` as aligned text lines."""
    path = Path(run_dir) / "eval" / "hard_examples.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    lines = [f"  {'source':<16} {'input':<44} {'reference':<10} prediction"]
    for r in records:
        text = " / ".join(str(v) for v in (r.get("input") or {}).values()).replace("\n", " ")
        text = text if len(text) <= 44 else text[:41] + "..."
        lines.append(f"  {r['tags'].get('source', '')!s:<16} {text:<44} {r['reference']!s:<10} "
                     f"{r['prediction']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``prepare --dir DIR [--task T]`` and ``hard --run RUN [-n N]``."""
    parser = argparse.ArgumentParser(prog="python examples/demo/demo.py",
                                     description="Prepare the offline demo (base models and datasets).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the base model (cached) and write the dataset files")
    p.add_argument("--dir", required=True)
    p.add_argument("--task", choices=TASKS, default="sft")
    p.add_argument("--store", help="dataset store to check for demo versions made from other data")
    p.add_argument("--dataset-id", help="the demo dataset's id in --store (ds_demo, ds_demo_cls)")
    h = sub.add_parser("hard", help="print a run's hardest evaluation examples")
    h.add_argument("--run", required=True)
    h.add_argument("-n", type=int, default=5)
    args = parser.parse_args(argv)
    if args.cmd == "prepare" and bool(args.store) != bool(args.dataset_id):
        parser.error("--store and --dataset-id go together")
    if args.cmd == "hard":
        print(hard_examples_table(args.run, args.n))
        return
    for name, path in prepare(args.dir, args.task, args.store, args.dataset_id).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
