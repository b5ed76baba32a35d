"""Loss curves from a run's ``metrics.jsonl`` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
import pathlib
from typing import Sequence


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """Rows of a metrics JSONL file (a torn last line from a killed run is skipped)."""
    rows = []
    for line in pathlib.Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_loss_curve(
    metrics_path: str | pathlib.Path, png_path: str | pathlib.Path, *, title: str, keys: Sequence[str] = ("loss",)
) -> pathlib.Path | None:
    """Plot ``keys`` against ``step``; returns the PNG path, or None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in read_metrics(metrics_path) if "step" in row]
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for key in keys:
        points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, label=key, linewidth=1.2)
    axis.set_xlabel("step")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    if all(row.get("loss", 1.0) > 0 for row in rows):
        axis.set_yscale("log")
    figure.tight_layout()
    png_path = pathlib.Path(png_path)
    figure.savefig(png_path)
    plt.close(figure)
    return png_path
