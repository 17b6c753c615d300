"""Bootstrap intervals for sliced evaluation: vectorised (ours) vs a per-resample loop.

Work: 2000 test rows, 6 SFT metrics (exact_match, token_f1, loss, perplexity,
format_compliance, gold_exact_match), 11 slices (source, difficulty, source&difficulty) plus
overall, 1000 resamples each. Ours: the bootstrap part of ``build_eval_result`` (its time
with 1000 resamples minus its time with 0). Baseline: the same resamples, one NumPy mean per
resample, metric and row set (per-example values precomputed, so only the resampling differs).
Prints medians over N runs and the ratio measured in this run.

    .venv/bin/python benchmarks/bench_bootstrap.py [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from verifily_core.evaluation import build_eval_result
from verifily_core.evaluation.stats import rng_for
from verifily_core.plugins import load_registries

METRICS = ["exact_match", "token_f1", "loss", "perplexity", "format_compliance", "gold_exact_match"]
SLICE_BY = ["source", "difficulty", "source&difficulty"]


def make_records(n: int = 2000, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ref = " ".join(rnd.choice("abcdefgh") for _ in range(rnd.randint(1, 20)))
        pred = ref if rnd.random() < 0.7 else " ".join(rnd.choice("abcdefgh") for _ in range(5))
        if rnd.random() < 0.3:
            ref, pred = '{"answer": "%s"}' % ref, '{"answer": "%s"}' % pred
        out.append({"index": i, "row_id": f"r{i}", "prediction": pred, "reference": ref,
                    "scores": {"loss": rnd.uniform(0.1, 3.0), "n_tokens": rnd.randint(1, 30)},
                    "tags": {"source": rnd.choice(["human", "synthetic", "ai"]), "difficulty": rnd.choice(["easy", "hard"]),
                             "gold": rnd.random() < 0.1}})
    return out


def naive_bootstrap(result, resamples: int, seed: int) -> float:
    """Per-resample loop over the same row sets and positions; returns seconds."""
    recs = result.records
    sets = {"overall": list(range(len(recs)))}
    for name in result.slice_results:
        want = dict(part.split("=") for part in name.split("&"))
        sets[name] = [i for i, r in enumerate(recs) if all(str(r["tags"].get(k)) == v for k, v in want.items())]
    start = time.perf_counter()
    for key, members in sets.items():
        rows = [recs[i] for i in members]
        for metric in METRICS:
            gold = metric == "gold_exact_match"
            sub = [r for r in rows if r["tags"]["gold"]] if gold else rows
            if metric in ("loss", "perplexity"):
                v = np.array([r["scores"]["loss"] for r in sub])
                w = np.array([float(r["scores"]["n_tokens"]) for r in sub])
            else:
                name = "exact_match" if gold else metric
                v = np.array([r["scores"].get(name, np.nan) for r in sub])
                w = (~np.isnan(v)).astype(float)
                v = np.nan_to_num(v)
            rng = rng_for(seed, key + ("|gold" if gold else ""))
            idx = rng.integers(0, len(sub), size=(resamples, len(sub)))
            values = np.empty(resamples)
            for b in range(resamples):
                values[b] = (v[idx[b]] * w[idx[b]]).sum() / w[idx[b]].sum()
            if metric == "perplexity":
                values = np.exp(values)
            np.nanpercentile(values, [2.5, 97.5])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    regs = load_registries()
    metrics = [regs.metrics.get(m) for m in METRICS]
    records = make_records()
    ours, base, totals = [], [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        result = build_eval_result(records, "sft", metrics, slicers=regs.slicers, slice_by=SLICE_BY, resamples=1000)
        t1 = time.perf_counter()
        build_eval_result(records, "sft", metrics, slicers=regs.slicers, slice_by=SLICE_BY, resamples=0)
        t2 = time.perf_counter()
        totals.append(t1 - t0)
        ours.append((t1 - t0) - (t2 - t1))
        base.append(naive_bootstrap(result, 1000, 42))
    print(f"rows={len(records)} metrics={len(METRICS)} slices={len(result.slice_results)} resamples=1000")
    print(f"build_eval_result total:        {statistics.median(totals):.3f} s")
    print(f"bootstrap, vectorised (ours):   {statistics.median(ours):.3f} s")
    print(f"bootstrap, per-resample loop:   {statistics.median(base):.3f} s")
    print(f"ratio (loop / ours):            {statistics.median(base) / statistics.median(ours):.1f}x")


if __name__ == "__main__":
    main()
