"""``verifily compare``: what changed between runs, overall and per tag slice."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import click

from verifily_core.console import out, style


@click.command()
@click.option("--runs", "runs", required=True, help="Comma-separated run paths or run ids (first = baseline).")
@click.option("--metric", default="f1", show_default=True,
              help="Metric to compare; f1 means token_f1 for SFT and macro_f1 for classification.")
@click.option("--slice-by", help="Tag key to break the comparison down by (e.g. source).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run ids are looked up.")
def compare(runs: str, metric: str, slice_by: str | None, fmt: str, output: str | None, runs_dir: str) -> None:
    """Compare a metric across runs trained on different dataset versions."""
    from verifily_core.compare import compare as do_compare

    result = do_compare([r.strip() for r in runs.split(",") if r.strip()], metric, slice_by, runs_dir)
    text = {"json": lambda: json.dumps(result.to_json_dict(), indent=2), "csv": lambda: to_csv(result),
            "table": lambda: to_table(result)}[fmt]()
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        out(f"Comparison written to {output}")
    else:
        out(text.rstrip("\n"))


def _columns(result: Any) -> list[str | None]:
    return [None, *(result.slices or {})]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def to_rows(result: Any) -> list[dict[str, Any]]:
    """One row per run: values and deltas overall and per slice (the CSV and table content)."""
    rows = []
    for rid in result.runs:
        row: dict[str, Any] = {"run": result.labels[rid], "run_id": rid, "dataset_version": result.datasets[rid],
                               "overall": result.overall[rid], "overall_delta": result.deltas[rid]}
        for s in result.slices or {}:
            row[s] = result.slices[s][rid]
            row[f"{s}_delta"] = result.slice_deltas[s][rid]
        rows.append(row)
    return rows


def to_csv(result: Any) -> str:
    """CSV with a header row; one line per run."""
    rows = to_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _ci(result: Any, rid: str, key: str) -> str:
    ci = result.intervals.get(rid, {}).get(key)
    if not ci:
        return ""
    mark = "*" if ci["significant"] else ""
    return f" [{ci['low']:+.3f},{ci['high']:+.3f}]{mark}"


def to_table(result: Any) -> str:
    """The terminal table of cli-design.md, with delta intervals and training-data changes."""
    cols = _columns(result)
    heads = ["Overall", *cols[1:]]
    width = max(12, *(len(str(c)) + 2 for c in cols[1:])) if cols[1:] else 12
    lines = [style(f"Comparison: {result.metric}", bold=True), ""]
    lines += [w for w in result.warnings]
    name_w = max(24, *(len(v) + 2 for v in result.labels.values()))
    lines.append(f"  {'Run':<{name_w}} {'Dataset Version':<18}" + "".join(f"{h:>{width}}" for h in heads))
    for rid in result.runs:
        vals = [result.overall[rid], *((result.slices or {})[c][rid] for c in cols[1:])]
        lines.append(f"  {result.labels[rid]:<{name_w}} {result.datasets[rid]:<18}" +
                     "".join(f"{_fmt(v):>{width}}" for v in vals))
    base = result.runs[0]
    for rid in result.runs[1:]:
        label = f"Delta ({result.datasets[rid]} vs {result.datasets[base]}):"
        deltas = [result.deltas[rid], *(result.slice_deltas[c][rid] for c in cols[1:])]
        lines.append("")
        lines.append(f"  {label:<{name_w + 19}}" + "".join(f"{_fmt(d, True):>{width}}" for d in deltas))
        keys = ["overall", *cols[1:]]
        cis = [(_ci(result, rid, str(k))) for k in keys]
        if any(cis):
            lines.append(f"  {'95% CI of delta (* = significant):':<{name_w + 19}}")
            for k, c in zip(heads, cis):
                if c:
                    lines.append(f"      {k:<30}{c}")
        changes = result.data_changes.get(rid)
        if changes and result.slices:
            lines.append("  Training data changes beside the metric delta:")
            for s in result.slices:
                c = changes.get(s)
                if c:
                    lines.append(f"      {s:<30} +{c['added']} added  -{c['removed']} removed  ~{c['changed']} changed"
                                 f"   delta {_fmt(result.slice_deltas[s][rid], True)}")
    lines += ["", "  Interpretation:"] + [f"    - {line}" if not line.startswith(("Note", "  ")) else f"    {line.strip()}"
                                          for line in result.interpretation]
    return "\n".join(lines)
