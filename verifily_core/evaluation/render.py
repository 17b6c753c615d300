"""The terminal report of ``verifily eval`` (cli-design.md), with intervals and small-slice flags."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from verifily_core.evaluation.result import HARD_FILE, NOTE, RESULTS_FILE, EvalResult, MetricValue

MAX_OVER_LINES = 3


def fmt_value(value: float | None) -> str:
    """Four decimals for values in [0, 1] (rates, F1), two otherwise (loss, perplexity)."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if 0.0 <= value <= 1.0 else f"{value:.2f}"


def fmt_interval(mv: MetricValue) -> str:
    """``[0.69, 0.77]`` with as many decimals (2 to 6) as it takes to tell the ends apart."""
    if mv.interval is None:
        return ""
    lo, hi = mv.interval
    digits = 2
    while digits < 6 and lo != hi and round(lo, digits) == round(hi, digits):
        digits += 1
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_metric(name: str, mv: MetricValue) -> str:
    """``token_f1=0.7312 [0.69, 0.77]``."""
    interval = fmt_interval(mv)
    return f"{name}={fmt_value(mv.value)}" + (f" {interval}" if interval else "")


def render_eval(result: EvalResult, output_dir: str | Path | None = None) -> str:
    """The human report: overall metrics, slices, what metrics show of non-scalar results (e.g.
    a confusion matrix), hard examples, the note."""
    out_dir = output_dir or result.output_dir
    source = f" ({result.test_data_path})" if result.test_data_path else ""
    lines = [f"Evaluation: {result.run_id or '(no run)'}", f"  Test set: {result.num_examples} examples{source}",
             "", "  Overall:"]
    width = max((len(n) for n in result.metric_values), default=0) + 1
    for name, mv in result.metric_values.items():
        extra = f"  (n={mv.n})" if mv.n != result.num_examples else ""  # rows that counted
        lines.append(f"    {name + ':':<{width}}  {fmt_value(mv.value):<8} {fmt_interval(mv)}".rstrip() + extra)
    for spec, group in groupby(result.slice_results.values(), key=lambda s: s.spec):
        lines += ["", f"  Sliced by [{spec}]:"] + _slice_lines(list(group))
    for name, details in result.details.items():  # non-scalar results the metric itself can show
        metric = result.metric_objects.get(name)
        lines += metric.render_details(details) if metric is not None else []
    lines += [""] + _hard_lines(result, out_dir)
    conf = result.confidence
    if conf.get("resamples"):
        lines.append(f"  Intervals: {round(100 * conf['level'])}% {conf['method']}, {conf['resamples']} resamples, "
                     f"seed {conf['seed']}" + (f"; small: n < {result.min_slice_size}" if result.slice_results else ""))
    lines.append(f"  Note: {NOTE}")
    return "\n".join(lines)


def _slice_lines(members: list[Any]) -> list[str]:
    """``source=human (n=800):  f1=0.7312 [0.69, 0.77]  ...`` with names and metric cells aligned."""
    name_w = max(len(s.name) for s in members)
    heads = [f"{s.name:<{name_w}} (n={s.n}{', small' if s.small else ''}):" for s in members]
    head_w = max(len(h) for h in heads)
    cells = [[fmt_metric(k, v) for k, v in s.metrics.items()] for s in members]
    widths = [max(len(row[j]) for row in cells if j < len(row)) for j in range(max(map(len, cells), default=0))]
    return [f"    {head:<{head_w}}  " + "  ".join(f"{c:<{widths[j]}}" for j, c in enumerate(row)).rstrip()
            for head, row in zip(heads, cells)]


def _hard_lines(result: EvalResult, out_dir: str | Path | None) -> list[str]:
    if not result.hard_examples:
        reason = "no per-example score to rank by" if result.hard_score is None else "none requested"
        lines = [f"  Hard examples: {reason}"]
    else:
        order = "highest" if result.hard_higher_is_better is False else "lowest"
        where = f" written to: {Path(out_dir) / HARD_FILE}" if out_dir else ":"
        ties = f"; ties broken by {', '.join(result.hard_tie_break)}" if result.hard_tie_break else ""
        lines = [f"  Hard examples{where} ({len(result.hard_examples)} examples, {order} {result.hard_score} "
                 f"first{ties})"]
        if result.hard_tested > len(result.hard_examples):
            lines.append(f"    {result.hard_tested} test rows are no better than the last of them "
                         f"({result.hard_score}={result.hard_threshold:.4g}); "
                         + ("every test row ties, so no slice can be over-represented"
                            if result.hard_tested >= result.num_examples else
                            "over-representation is tested on all of them"))
        for e in result.over_represented[:MAX_OVER_LINES]:
            lines.append(f"    {e['hard_share']:.0%} of hard examples are {e['slice']} vs {e['test_share']:.0%} "
                         f"of the test set (p={e['p_value']:.2g})")
    if out_dir:
        lines.append(f"  Full results: {Path(out_dir) / RESULTS_FILE}")
    return lines + [""]
