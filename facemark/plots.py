"""Charts shared by eval, validate and benchmark: CED curves, scatter plots, multi-panel trade-offs.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot global state, no
display needed) and written atomically as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facemark.io import atomic_path


def _new_figure(width: float, height: float, panels: tuple[int, int] = (1, 1)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(*panels, squeeze=False)
    return figure, axes


def _save(figure, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # the temporary name ends in .partial, so the format is given, not guessed from it
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    return path


def plot_ced(curves: dict[str, np.ndarray], threshold: float, path: Path, steps: int = 201,
             title: str = "Cumulative error distribution") -> Path:
    """One CED line per label from its (N,) per-face NMEs, on [0, threshold]; legend shows the
    mean NME, the failure rate and the AUC at the threshold. Returns `path` (PNG)."""
    from facemark.metrics import auc, ced, failure_rate

    figure, axes = _new_figure(6.4, 4.4)
    ax = axes[0, 0]
    # FR and AUC are defined at the threshold, but a weak model would leave that window empty:
    # the axis extends to the largest 95th-percentile NME so every curve is visible.
    x_max = max([threshold] + [float(np.percentile(nmes, 95)) for nmes in curves.values()])
    for label, nmes in curves.items():
        xs, fractions = ced(nmes, x_max, steps)
        ax.plot(xs, fractions, label=f"{label}: NME {np.mean(nmes):.4f}, FR {failure_rate(nmes, threshold):.3f}, "
                                     f"AUC {auc(nmes, threshold):.3f}")
    if x_max > threshold:
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, x_max), ylim=(0, 1.02), xlabel="NME (inter-pupil)", ylabel="fraction of faces",
           title=f"{title} (FR/AUC at {threshold:g})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def _scatter(ax, points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str,
             annotate: bool = True) -> None:
    """One coloured marker per point; labels beside the markers, or (annotate=False) left to a legend."""
    for label, x, y in points:
        ax.scatter([x], [y], s=30, label=label)
        if annotate:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.margins(0.15)   # room for the labels of the extreme points
    ax.grid(alpha=0.3)


def plot_scatter(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, path: Path,
                 title: str = "") -> Path:
    """Labelled points (label, x, y) on one chart, e.g. NME vs latency per artifact. Returns `path`."""
    figure, axes = _new_figure(6.4, 4.4)
    # labels beside the markers overlap once float artifacts sit on top of each other: use a legend
    annotate = len(points) <= 4
    _scatter(axes[0, 0], points, xlabel, ylabel, annotate=annotate)
    if not annotate:
        axes[0, 0].legend(fontsize=8, loc="best")
    if title:
        axes[0, 0].set_title(title)
    return _save(figure, path)


def plot_panels(panels: list[tuple[str, str, list[tuple[str, float, float]], str | None]], ylabel: str,
                path: Path, title: str = "") -> Path:
    """A 2-column grid of scatter panels sharing the y quantity and one legend (same label, same
    colour in every panel, as long as each panel lists the labels in the same order).

    Each panel is (title, xlabel, points, note): with no points the panel shows `note` instead
    (e.g. "no GPU"), so a missing measurement is visible rather than an empty axis.
    """
    rows = (len(panels) + 1) // 2
    figure, axes = _new_figure(11.0, 4.2 * rows + 0.8, (rows, 2))
    for ax, (panel_title, xlabel, points, note) in zip(axes.flat, panels):
        _scatter(ax, points, xlabel, ylabel, annotate=False)
        ax.set_title(panel_title)
        if not points:
            ax.set(xticks=[], yticks=[])
            ax.text(0.5, 0.5, note or "no data", ha="center", va="center", transform=ax.transAxes, fontsize=14)
    fullest = max(axes.flat, key=lambda ax: len(ax.get_legend_handles_labels()[1]))
    handles, labels = fullest.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)
