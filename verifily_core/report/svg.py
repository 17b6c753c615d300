"""Inline SVG charts for the HTML report, written as text (no plotting library, no script):
grouped horizontal bars with interval whiskers, and line charts of loss curves. Every text
that reaches the markup goes through :func:`esc`."""

from __future__ import annotations

import html
from typing import Any, Sequence

COLORS = ("#3366cc", "#dc7633", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b")
"""One colour per run, in ``--runs`` order (cycled)."""


def esc(value: Any) -> str:
    """``value`` as text safe in HTML/SVG content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def color(i: int) -> str:
    """The colour of the ``i``-th run."""
    return COLORS[i % len(COLORS)]


def num(value: float | None) -> str:
    """A number as an attribute value: Python's shortest exact ``repr`` (empty when absent)."""
    return "" if value is None else repr(float(value))


def _domain(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min([0.0, *values]), max([0.0, *values])
    if 0.0 <= lo and hi <= 1.0:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def bar_chart(metric: str, groups: Sequence[str], runs: Sequence[tuple[str, str]],
              values: dict[tuple[str, str], dict[str, Any] | None]) -> str:
    """Grouped horizontal bars: for each group (``overall`` and the slices), one bar per run with
    its interval as a whisker.

    :param runs: ``(run_id, label)`` in order.
    :param values: ``{(run_id, group): {"value", "ci_low", "ci_high", "n"}}``; ``None`` or a
        ``None`` value draws ``n/a`` instead of a bar.
    Each bar is a ``<rect class="bar">`` carrying ``data-run``, ``data-slice``, ``data-metric``,
    ``data-value``, ``data-ci-low``, ``data-ci-high`` and ``data-n``.
    """
    bar_h, gap, label_w, plot_w, right = 16, 14, 230, 430, 150
    numbers = [float(x) for v in values.values() if v for x in (v.get("value"), v.get("ci_low"), v.get("ci_high"))
               if x is not None]
    lo, hi = _domain(numbers)

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    group_h = bar_h * len(runs) + gap
    top = 24
    height = top + group_h * len(groups) + 22
    width = label_w + plot_w + right
    out = [f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(metric)} per slice" data-metric="{esc(metric)}">',
           f'<text x="{label_w}" y="14" class="axis-title">{esc(metric)}</text>']
    for t in _ticks(lo, hi):
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{height - 18}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{height - 4}" text-anchor="middle">{esc(_fmt(t))}</text>')
    for g, group in enumerate(groups):
        y0 = top + g * group_h
        short = group if len(group) <= 34 else group[:33] + "\u2026"
        out.append(f'<text class="group" x="{label_w - 8}" y="{y0 + bar_h * len(runs) / 2 + 4:.1f}" '
                   f'text-anchor="end"><title>{esc(group)}</title>{esc(short)}</text>')
        for i, (run_id, label) in enumerate(runs):
            y = y0 + i * bar_h
            v = values.get((run_id, group))
            if not v or v.get("value") is None:
                out.append(f'<text class="missing" x="{x(lo) + 4:.1f}" y="{y + bar_h - 4}" data-run="{esc(run_id)}" '
                           f'data-slice="{esc(group)}">n/a</text>')
                continue
            value = float(v["value"])
            x0, x1 = sorted((x(max(lo, min(0.0, hi))), x(value)))
            ci = "" if v.get("ci_low") is None else f" [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]"
            out.append(
                f'<rect class="bar" x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 4}" '
                f'fill="{color(i)}" data-run="{esc(run_id)}" data-slice="{esc(group)}" data-metric="{esc(metric)}" '
                f'data-value="{num(value)}" data-ci-low="{num(v.get("ci_low"))}" data-ci-high="{num(v.get("ci_high"))}" '
                f'data-n="{esc(v.get("n", ""))}"><title>{esc(label)} {esc(group)}: {value:.4f}{esc(ci)} '
                f'(n={esc(v.get("n", "?"))})</title></rect>')
            if v.get("ci_low") is not None and v.get("ci_high") is not None:
                a, b, mid = x(float(v["ci_low"])), x(float(v["ci_high"])), y + bar_h / 2
                out.append(f'<path class="ci" d="M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 4:.1f}V{mid + 4:.1f}'
                           f'M{b:.1f} {mid - 4:.1f}V{mid + 4:.1f}"/>')
            out.append(f'<text class="value" x="{label_w + plot_w + 6}" y="{y + bar_h - 4}">{value:.4f}{esc(ci)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def line_chart(series: Sequence[dict[str, Any]], y_label: str = "training and validation loss") -> str:
    """Loss curves: one polyline per series (``label``, ``color``, ``dashed``, ``points`` as
    ``(step, value)``), on shared axes, with a legend. Series without points are left out."""
    series = [s for s in series if s["points"]]
    width, height, left, right, top, bottom = 760, 300, 60, 200, 16, 40
    xs = [p[0] for s in series for p in s["points"]]
    ys = [p[1] for s in series for p in s["points"]]
    x_lo, x_hi = min(xs), max(xs)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * ph

    out = [f'<svg class="lines" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(y_label)} by step">',
           f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    for t in _ticks(y_lo, y_hi):
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{esc(_fmt(t))}</text>')
    for t in _ticks(x_lo, x_hi):
        out.append(f'<text class="tick" x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{esc(_fmt(t))}</text>')
    out.append(f'<text class="axis-title" x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">step</text>'
               f'<text class="axis-title" x="12" y="{top + ph / 2:.1f}" transform="rotate(-90 12 {top + ph / 2:.1f})" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for i, s in enumerate(series):
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in s["points"])
        dash = ' stroke-dasharray="6 4"' if s.get("dashed") else ""
        out.append(f'<polyline class="curve" points="{pts}" stroke="{s["color"]}"{dash} data-series="{esc(s["label"])}"/>')
        for a, b in s["points"] if len(s["points"]) < 40 else []:
            out.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{s["color"]}">'
                       f'<title>{esc(s["label"])} step {a:g}: {b:.4f}</title></circle>')
        ly = top + 14 + i * 18
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 36}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s["color"]}" '
                   f'stroke-width="2"{dash}/><text class="legend" x="{left + pw + 42}" y="{ly}">{esc(s["label"])}</text>')
    out.append("</svg>")
    return "\n".join(out)
