"""The report as one self-contained HTML page: inline CSS, inline SVG charts, tables, no
script and no external resource. Every value read from a run (rows are user data) is escaped."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from verifily_core import __version__
from verifily_core.comparison.render import csv_rows, fmt_changes, fmt_delta, fmt_interval
from verifily_core.comparison.result import NOTE, OVERALL
from verifily_core.report.gather import ReportData, RunReport
from verifily_core.report.svg import bar_chart, color, esc, line_chart

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#666}.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:6px 10px;margin:4px 0}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{max-width:360px;white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.sig{font-weight:600}.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
svg text{font-size:12px;fill:#333}svg .axis-title{font-weight:600}svg .grid{stroke:#e3e3e3}svg .tick{fill:#777;font-size:11px}
svg .ci{stroke:#111;stroke-width:1.3;fill:none}svg .frame{fill:none;stroke:#ccc}svg .curve{fill:none;stroke-width:2}
svg .missing{fill:#999;font-style:italic}
"""


def render_report(data: ReportData) -> str:
    """The whole page for ``data``."""
    parts = [_header(data), _summary(data), _slices(data)]
    if data.comparison is not None:
        parts += [_deltas(data), _data_changes(data)]
    parts += [_loss(data), _confusion(data), _hard(data), _attribution(data)]
    body = "\n".join(p for p in parts if p)
    title = "Verifily report: " + ", ".join(r.label for r in data.runs)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _table(heads: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table; a cell given as ``("num", text)`` or ``("text", text)`` gets that class (text is escaped)."""
    out = [f'<table class="{esc(cls)}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for cell in row:
            kind, text = cell if isinstance(cell, tuple) else ("", cell)
            cells.append(f'<td class="{kind}">{esc(text)}</td>' if kind else f"<td>{esc(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _value(v: Any) -> str:
    if v is None or getattr(v, "value", None) is None:
        return "-"
    ci = f" [{v.ci_low:.4f}, {v.ci_high:.4f}]" if v.ci_low is not None and v.ci_high is not None else ""
    return f"{v.value:.4f}{ci}"


def _run_label(i: int, run: RunReport) -> str:
    return f'<span class="swatch" style="background:{color(i)}"></span>{esc(run.label)}'


def _header(data: ReportData) -> str:
    warnings = list(data.warnings) + (data.comparison.warnings if data.comparison else [])
    return "\n".join([
        "<h1>Verifily report</h1>",
        f'<p class="muted">{len(data.runs)} run(s); primary metric <b>{esc(data.metric)}</b>; '
        f"made by verifily {esc(__version__)}. {esc(NOTE)}</p>",
        *(f'<p class="warn">{esc(w)}</p>' for w in warnings)])


def _summary(data: ReportData) -> str:
    rows = []
    for i, r in enumerate(data.runs):
        v = r.value(data.metric)
        rows.append(f"<tr><td>{_run_label(i, r)}</td><td>{esc(r.run_id)}</td><td>{esc(r.dataset)}</td>"
                    f"<td>{esc(r.task)}</td><td>{esc(r.base_model)}</td><td class=\"num\">{esc(_value(v))}</td>"
                    f"<td class=\"num\">{esc(v.n if v else '-')}</td></tr>")
    heads = ["Run", "Run id", "Dataset version", "Task", "Base model", f"{data.metric} [95% CI]", "n"]
    table = ("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    metrics = list(dict.fromkeys(m for r in data.runs for m in r.metrics))
    overall = _table(["Metric", *(r.label for r in data.runs)],
                     [[m, *(("num", _value(r.metrics.get(m))) for r in data.runs)] for m in metrics])
    return f'<h2 id="runs">Runs</h2>\n{table}\n<h3>Every metric on the whole test set</h3>\n{overall}'


def _slices(data: ReportData) -> str:
    groups = [OVERALL, *data.slice_names]
    values = {(r.run_id, g): _bar_value(r.value(data.metric, g)) for r in data.runs for g in groups}
    chart = bar_chart(data.metric, groups, [(r.run_id, r.label) for r in data.runs], values)
    rows = []
    for g in groups:
        sizes = [r.slices.get(g, {}).get("n") if g != OVERALL else (r.value(data.metric).n if r.value(data.metric) else None)
                 for r in data.runs]
        small = any(r.slices.get(g, {}).get("small") for r in data.runs)
        rows.append([g + (" (small)" if small else ""),
                     *(x for r, n in zip(data.runs, sizes) for x in (("num", _value(r.value(data.metric, g))),
                                                                     ("num", "-" if n is None else n)))])
    table = _table(["Slice", *(h for r in data.runs for h in (f"{r.label}: {data.metric} [95% CI]", "n"))], rows)
    note = "" if data.slice_names else '<p class="muted">The runs were evaluated without slices.</p>'
    return (f'<h2 id="slices">{esc(data.metric)} per slice</h2>\n{note}\n'
            f'<p class="muted">Bars: the value; whiskers: its bootstrap confidence interval (eval_results.json).</p>'
            f"\n{chart}\n{table}")


def _bar_value(v: Any) -> dict[str, Any] | None:
    return None if v is None else {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n}


def _deltas(data: ReportData) -> str:
    cmp = data.comparison
    assert cmp is not None
    columns = [OVERALL, *cmp.slice_names]
    by_key = {(row["run_id"], row["slice"]): row for row in csv_rows(cmp)}
    level = round(100 * (cmp.confidence.get("level") or 0.95))
    out = [f'<h2 id="deltas">Deltas against {esc(cmp.labels[cmp.baseline])}</h2>',
           f'<p class="muted">{esc(cmp.metric)}; paired bootstrap ({level}% interval of each delta); '
           "* marks a delta whose interval excludes 0 (significant).</p>"]
    for rid in cmp.runs[1:]:
        rows = [["Delta", *(("num", fmt_delta(cmp.delta(rid, c), cmp.interval(rid, c))) for c in columns)],
                [f"{level}% CI of delta", *(("num", fmt_interval(cmp.interval(rid, c)) or "-") for c in columns)]]
        if cmp.data_changes.get(rid):
            rows.append(["Train rows +add/-rem/~chg",
                         *(("num", fmt_changes(_counts(by_key[(rid, c)]))) for c in columns)])
        out += [f"<h3>{esc(cmp.labels[rid])} ({esc(cmp.datasets[rid])}) vs {esc(cmp.labels[cmp.baseline])} "
                f"({esc(cmp.datasets[cmp.baseline])})</h3>", _table(["", *columns], rows, "deltas")]
    out += ["<h3>Interpretation</h3>", "<ul>" + "".join(f"<li>{esc(t)}</li>" for t in cmp.interpretation) + "</ul>"]
    return "\n".join(out)


def _counts(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("train_added") is None:
        return None
    return {k: row[f"train_{k}"] for k in ("added", "removed", "changed")}


def _data_changes(data: ReportData) -> str:
    cmp = data.comparison
    assert cmp is not None
    out = ['<h2 id="data">Training data changes per tag</h2>']
    if not cmp.data_changes:
        out.append('<p class="muted">The runs were trained on the same dataset version (or the versions could not '
                   "be read: see the warnings).</p>")
    kinds = ("added", "removed", "changed", "retagged")
    for rid, changes in cmp.data_changes.items():
        rows = [["train (all rows)", *(("num", changes["train"].get(k, 0)) for k in kinds)]]
        rows += [[tag, *(("num", counts.get(k, 0)) for k in kinds)] for tag, counts in sorted(changes["by_tag"].items())]
        out += [f"<h3>{esc(changes['from'])} &rarr; {esc(changes['to'])} ({esc(cmp.labels[rid])})</h3>",
                _table(["Tag", *kinds], rows, "data-changes")]
    return "\n".join(out)


def _loss(data: ReportData) -> str:
    series = []
    for i, r in enumerate(data.runs):
        series += [{"label": f"{r.label} train", "color": color(i), "dashed": False, "points": r.train_loss},
                   {"label": f"{r.label} val", "color": color(i), "dashed": True, "points": r.val_loss}]
    if not any(s["points"] for s in series):
        return '<h2 id="loss">Loss curves</h2>\n<p class="muted">No train_log.jsonl with losses in these runs.</p>'
    return ('<h2 id="loss">Loss curves</h2>\n<p class="muted">From each run\'s train_log.jsonl: training loss '
            "(solid) and validation loss (dashed) by step.</p>\n" + line_chart(series))


def _confusion(data: ReportData) -> str:
    out = []
    for r in data.runs:
        cm = r.confusion
        if not cm:
            continue
        peak = max([c for row in cm["matrix"] for c in row] + [1])
        rows = []
        for label, counts in zip(cm["labels"], cm["matrix"]):
            cells = "".join(f'<td class="num" style="background:rgba(51,102,204,{0.08 + 0.6 * c / peak:.2f})">{esc(c)}</td>'
                            for c in counts)
            rows.append(f"<tr><th>{esc(label)}</th>{cells}</tr>")
        out += [f"<h3>{esc(r.label)} <span class=\"muted\">(from {esc(cm['source'])})</span></h3>",
                '<table class="confusion"><thead><tr><th>true \\ predicted</th>'
                + "".join(f"<th>{esc(c)}</th>" for c in cm["columns"]) + "</tr></thead><tbody>"
                + "".join(rows) + "</tbody></table>"]
    return '<h2 id="confusion">Confusion matrices</h2>\n' + "\n".join(out) if out else ""


def _tags(tags: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((tags or {}).items())) or "-"


def _text(value: Any, width: int = 400) -> str:
    if isinstance(value, dict):  # a row's input parts: one "name: text" line each
        value = "\n".join(f"{k}: {v}" for k, v in value.items())
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text if len(text) <= width else text[:width - 3] + "..."


def _hard(data: ReportData) -> str:
    out = ['<h2 id="hard">Hard examples</h2>']
    for r in data.runs:
        if not r.hard_examples:
            continue
        rows = [[("num", i + 1), ("num", f"{x.get('score'):.4g}" if isinstance(x.get("score"), (int, float)) else "-"),
                 ("text", _tags(x.get("tags"))), ("text", _text(x.get("input"))), ("text", _text(x.get("reference"))),
                 ("text", _text(x.get("prediction")))] for i, x in enumerate(r.hard_examples)]
        out += [f"<h3>{esc(r.label)} <span class=\"muted\">(worst first by {esc(r.hard_score or 'score')})</span></h3>",
                _table(["#", "Score", "Tags", "Input", "Reference", "Prediction"], rows, "hard")]
    return "\n".join(out) if len(out) > 1 else ""


def _checks(a: dict[str, Any]) -> list[str]:
    """Tables of ``--validate`` and ``--leave-out``: each retrained variant's delta on the slices."""
    out = []
    variants = []
    if a.get("validate"):
        v = a["validate"]
        variants += [(v, [o for o in (v.get("target"), v.get("overall")) if isinstance(o, dict)])]
    if a.get("leave_out"):
        doc = a["leave_out"]
        wanted = {"overall", doc.get("target")}
        variants += [(v, [o for o in v.get("slices") or [] if isinstance(o, dict) and (
            o.get("slice") in wanted or str(o.get("slice", "")).startswith(f"{doc.get('key')}="))])
            for v in doc.get("variants") or [] if isinstance(v, dict)]
    rows = [[("text", v.get("label")), ("num", v.get("removed_rows")), ("text", v.get("run_id")), ("text", o.get("slice")),
             ("num", _signed(o.get("delta"))), ("num", f"[{_signed(o.get('ci_low'))}, {_signed(o.get('ci_high'))}]"),
             ("text", "yes" if o.get("significant") else "no")] for v, outcomes in variants for o in outcomes]
    if rows:
        out += ["<h3>Checked by retraining</h3>",
                _table(["Retrained", "Rows removed", "Run", "Slice", "Delta", "95% CI", "Significant"], rows, "checks")]
    return out


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _attribution(data: ReportData) -> str:
    out = []
    for r in data.runs:
        a = r.attribution
        if not a:
            continue
        s = a["settings"]
        if not s:  # only retraining checks (--leave-out)
            out += [f"<h3>{esc(r.label)}</h3>", *_checks(a)]
            continue
        out.append(f"<h3>{esc(r.label)}: influence on {esc(s.get('target', 'the test split'))}</h3>")
        out.append(f'<p class="muted">{esc(s.get("method", ""))}; {esc(s.get("train_rows", "?"))} training rows, '
                   f'{esc(s.get("test_rows", "?"))} test rows. A positive score: training on the row made the test '
                   'rows more likely right (it helped).</p>')
        out += _checks(a)
        if a["summary"]:
            out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in a["summary"]) + "</ul>")
        tag_rows = [[key, value, ("num", st.get("rows")), ("num", f"{st.get('mean', 0):+.4g}"),
                     ("num", f"[{st.get('low', 0):+.4g}, {st.get('high', 0):+.4g}]"), ("num", f"{st.get('sum', 0):+.4g}")]
                    for key, values in a["by_tag"].items() if isinstance(values, dict)
                    for value, st in values.items() if isinstance(st, dict)]
        if tag_rows:
            out.append(_table(["Tag", "Value", "Rows", "Mean score", "95% CI", "Sum"], tag_rows, "by-tag"))
        for title, rows in (("Most harmful training rows", a["harmful"]), ("Most helpful training rows", a["helpful"])):
            out += [f"<h3>{esc(title)}</h3>", _table(["Score", "Row", "Tags", "Reference"], [
                [("num", f"{x['score']:+.4g}"), ("num", x.get("index", "-")), ("text", _tags(x.get("tags"))),
                 ("text", _text(x.get("reference")))] for x in rows], "attribution-rows")]
    return '<h2 id="attribution">Attribution</h2>\n' + "\n".join(out) if out else ""
