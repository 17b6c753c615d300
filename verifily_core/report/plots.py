"""PNG plots of an evaluation (``verifily eval --plot``): for every scalar metric the value
overall and per slice with its bootstrap interval (``slices_<metric>.png``), and the run's
loss curves (``loss.png``). Drawn with matplotlib, the optional ``plots`` extra, imported
only here and only when plotting.

Sizes are fixed so that a plot's pixels are predictable: :data:`WIDTH_PX` wide, a slice plot
:func:`slice_plot_height` high and the loss plot :data:`LOSS_HEIGHT_PX` high.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from verifily_core.comparison.result import OVERALL
from verifily_core.errors import ConfigError
from verifily_core.evaluation.result import PLOTS_DIR

LOSS_PNG = "loss.png"
DPI = 100
WIDTH_PX = 900
LOSS_HEIGHT_PX = 450
INSTALL = "pip install 'verifily-train[plots]'"


def require_matplotlib() -> None:
    """Check that matplotlib can be imported (before any slow work).

    :raises ConfigError: it cannot; the line says how to install the ``plots`` extra.
    """
    from importlib import import_module

    try:
        import_module("matplotlib")
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib, which is not installed: {INSTALL}") from None


def slice_plot_height(groups: int) -> int:
    """Pixel height of a slice plot with ``groups`` bars (``overall`` and the slices)."""
    return max(300, 120 + 36 * groups)


def slice_png(metric: str) -> str:
    """The file name of a metric's slice plot (characters other than letters, digits, ``_.-`` as ``_``)."""
    return "slices_" + re.sub(r"[^A-Za-z0-9_.-]", "_", metric) + ".png"


def write_eval_plots(eval_dir: str | Path, out_dir: str | Path, run_path: str | Path | None = None) -> list[Path]:
    """Draw the plots of the evaluation in ``eval_dir`` (and the loss curves of the run at
    ``run_path``, from its ``train_log.jsonl``) into ``out_dir``; returns the files written.

    Each PNG is rendered in a hidden staging folder and renamed into place. When ``out_dir`` is
    ``eval_dir/plots``, PNGs of an earlier ``--plot`` that this one did not draw are removed.
    :raises ConfigError: matplotlib is not installed. :raises EvalError: unreadable results.
    :raises OSError: ``out_dir`` cannot be written.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from verifily_core.evaluation.result import load_eval_result
    from verifily_core.report.gather import loss_curves

    result = load_eval_result(eval_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    in_eval = out.resolve() == (Path(eval_dir) / PLOTS_DIR).resolve()
    # staged beside the seal's other temporary entries, which it skips (``.eval-*``)
    stage = Path(tempfile.mkdtemp(prefix=".eval-plots-", dir=eval_dir if in_eval else out))
    names: list[str] = []
    try:
        groups = [OVERALL, *result.slice_results]
        for metric in result.metric_values:
            rows = [(g, result.metric_values[metric] if g == OVERALL else result.slice_results[g].metrics.get(metric))
                    for g in groups]
            if any(v is not None and v.value is not None for _, v in rows):
                names.append(_slice_plot(plt, metric, rows, stage / slice_png(metric)))
        train, val = loss_curves(Path(run_path) / "train_log.jsonl") if run_path else ([], [])
        if train or val:
            names.append(_loss_plot(plt, train, val, stage / LOSS_PNG))
        for name in names:
            os.replace(stage / name, out / name)
    except OSError as exc:  # name the plot, not its staging copy
        if exc.filename and Path(exc.filename).parent == stage:
            exc.filename = str(out / Path(exc.filename).name)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if in_eval:
        for stale in out.glob("*.png"):
            if stale.name not in names:
                stale.unlink()
    return [out / n for n in names]


def _slice_plot(plt: Any, metric: str, rows: list[tuple[str, Any]], path: Path) -> str:
    height = slice_plot_height(len(rows))
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI)
    try:
        ax = fig.add_axes((0.32, 50 / height, 0.63, 1 - 85 / height))
        labels = [g for g, _ in rows]
        values = [v.value if v is not None and v.value is not None else 0.0 for _, v in rows]
        ys = list(range(len(rows)))[::-1]
        ax.barh(ys, values, color=["#7f8c8d"] + ["#3366cc"] * (len(rows) - 1), height=0.6)
        for y, (_, v) in zip(ys, rows):
            if v is not None and v.ci_low is not None and v.ci_high is not None:
                ax.errorbar(v.value, y, xerr=[[v.value - v.ci_low], [v.ci_high - v.value]], fmt="none",
                            ecolor="black", capsize=4)
            if v is None or v.value is None:
                ax.text(0, y, " n/a", va="center", color="gray")
        ax.set_yticks(ys, labels=[_plain(_short(s)) for s in labels])
        ax.set_xlabel(_plain(metric))
        ax.set_title(f"{_plain(metric)} overall and per slice (bars: value, whiskers: 95% interval)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path.name


def _loss_plot(plt: Any, train: list[tuple[float, float]], val: list[tuple[float, float]], path: Path) -> str:
    fig = plt.figure(figsize=(WIDTH_PX / DPI, LOSS_HEIGHT_PX / DPI), dpi=DPI)
    try:
        ax = fig.add_axes((0.09, 0.12, 0.88, 0.8))
        for points, label, style in ((train, "train loss", "-"), (val, "val loss", "--")):
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("training and validation loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path.name


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _plain(text: str) -> str:
    """``text`` drawn as written: matplotlib would read ``$...$`` in a tag value as math."""
    return text.replace("$", r"\$")
