"""The confusion-matrix image (matplotlib is optional: the ``plots`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

PNG = "confusion_matrix.png"


def write_confusion_png(details: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """Draw ``details`` (``labels``, ``columns``, ``matrix``; multi-label: a row of ``tp, fp, fn, tn``
    per label) as a heat map with counts; return the file names written (none when matplotlib is
    not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows, cols, matrix = details["labels"], details.get("columns", details["labels"]), details["matrix"]
    size = max(3.0, 0.6 * len(cols) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size * len(rows) / max(len(cols), 1) + 0.5))
    try:
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(cols)), labels=[str(c) for c in cols], rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), labels=[str(r) for r in rows])
        ax.set_xlabel("count" if details.get("multi_label") else "predicted")
        ax.set_ylabel("label" if details.get("multi_label") else "true")
        peak = max((max(r) for r in matrix if r), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center",
                        color="white" if peak and count > peak / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(Path(out_dir) / PNG, dpi=100)
    finally:
        plt.close(fig)
    return [PNG]
