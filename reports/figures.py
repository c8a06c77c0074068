"""What every chart shares: the :class:`Chart` it returns, figure creation and saving.

matplotlib is imported only inside these functions, and figures are plain
``matplotlib.figure.Figure`` objects on an Agg canvas: no pyplot, so no global figure registry
to leak into and nothing to ``plt.close``; a figure is freed when it goes out of scope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.cellfiles import Load

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PNG_DPI = 200  # figures are sized in inches at 100 px per inch: PNG at 2x
MAX_PNG_PIXELS = 9000  # the tallest PNG side; a huge grid gets a lower dpi instead


@dataclass(frozen=True)
class Chart:
    """One chart of the report: written as ``charts/<name>.png`` and ``.svg``, or absent.

    ``note`` says what is missing from it (cells not run, samples not kept) or, when both paths
    are None, why the chart was not drawn at all.
    """

    name: str
    title: str
    how_to_read: str
    png: Path | None = None
    svg: Path | None = None
    note: str | None = None
    width_px: int = 0


def new_figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1,
               **subplot_kw: Any) -> tuple[Figure, Any]:
    """A Figure on an Agg canvas with a 2D array of axes (``squeeze=False``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save(fig: Figure, out_dir: Path, name: str, title: str, how_to_read: str,
         note: str | None = None) -> Chart:
    """Write ``out_dir/name.png`` (2x) and ``.svg``, creating ``out_dir`` first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    width, height = fig.get_size_inches()
    dpi = min(PNG_DPI, MAX_PNG_PIXELS / max(width, height))
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return Chart(name, title, how_to_read, png, svg, note, width_px=round(width * 100))


def absent(name: str, title: str, how_to_read: str, why: str) -> Chart:
    return Chart(name, title, how_to_read, note=why)


def grid_shape(count: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(max_cols, count))
    return math.ceil(max(count, 1) / cols), cols


def latency_axis(ax: Axes, latencies: Sequence[int]) -> str:
    """Put SMTP latencies on a log x axis; 0 ms needs a symlog axis, linear below the smallest
    non-zero latency. Returns the axis label, which says which scale was used."""
    from matplotlib.ticker import NullLocator

    positive = [lat for lat in latencies if lat > 0]
    smallest = min(positive) if positive else 1
    if 0 in latencies:
        ax.set_xscale("symlog", linthresh=smallest, linscale=0.5)
        label = f"SMTP latency (ms; symlog axis, linear below {smallest} ms)"
        ax.set_xlim(-0.3 * smallest, max(latencies) * 1.8 if positive else 1)
    else:
        ax.set_xscale("log")
        label = "SMTP latency (ms, log scale)"
        ax.set_xlim(smallest / 1.8, max(latencies, default=1) * 1.8)
    ax.set_xticks(list(latencies), labels=[f"{lat:g}" for lat in latencies])
    ax.xaxis.set_minor_locator(NullLocator())
    return label


def ms_axis(ax: Axes, low: float, high: float, axis: str = "x") -> str:
    """A milliseconds axis: log when the values span more than a decade, linear otherwise
    (a log axis inside one decade has no labelled ticks). Returns the scale's name."""
    if low > 0 and high / low > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        plain_ticks(ax.xaxis if axis == "x" else ax.yaxis)
        return "log scale"
    return "linear"


def plain_ticks(axis: Any) -> None:
    """Label a log axis 5, 50, 500 rather than 5×10⁰: a reader compares milliseconds."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def panel_note(ax: Axes, lines: Sequence[str], corner: str = "lower right") -> None:
    """Write what a panel lacks inside it (in ``corner``), so a gap never reads as a zero."""
    if lines:
        top, right = corner.startswith("upper"), corner.endswith("right")
        ax.text(0.98 if right else 0.02, 0.96 if top else 0.04, "\n".join(lines),
                transform=ax.transAxes, ha="right" if right else "left",
                va="top" if top else "bottom",
                fontsize=8, style="italic",
                bbox={"facecolor": "white", "edgecolor": "#999999", "alpha": 0.9})


def legend(ax: Axes, **options: Any) -> None:
    """A legend when the axes have labelled artists (matplotlib warns on an empty one)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, **options)


def load_text(load: Load | None) -> str:
    """``10 sign-ups/s`` or ``10 users``; ``no load`` for a run without cells."""
    return "no load" if load is None else load.title
