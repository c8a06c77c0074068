"""The report's history section: each gated figure of each cell over the runs of a history.

The series are the ones ``maillab gate --history`` judges (loadtests/historycheck.py): the same
target, file hash, profile and machine, cells valid for the figure's question only, with the
same change points (one PELT fit over the runs before this one). Each panel marks where a
segment starts with that run's commit and draws this run on top, so a reader sees what the
history check saw: the level it judged against and how far this run is from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.history import History, read_history
from loadtests.historycheck import COUNTS, TIMING, change_points, comparable
from loadtests.results import Results
from reports.data import ReportRun
from reports.figures import Chart, absent, grid_shape, new_figure, panel_note, save
from reports.style import style

TITLES = {
    "register.p50_ms": "POST /register, median (ms)",
    "register.p95_ms": "POST /register, p95 (ms)",
    "time_to_inbox.p50_ms": "time to inbox, median (ms)",
    "time_to_inbox.p95_ms": "time to inbox, p95 (ms)",
}
COUNT_NAMES = {"delivery.missing": "lost", "delivery.duplicates": "sent twice",
               "delivery.failed_visibly": "failed visibly"}
THIS_RUN = "#D55E00"


@dataclass(frozen=True)
class Point:
    run_id: str
    commit: str | None
    value: float


@dataclass(frozen=True)
class Series:
    """One cell's figure over the earlier runs, then this run (None: it has no such value)."""

    cell: str
    variant: str
    figure: str
    earlier: list[Point]
    now: float | None
    change_points: list[int]  # indexes into ``earlier`` where a later segment starts


@dataclass(frozen=True)
class HistoryView:
    path: Path
    runs: int  # earlier comparable runs
    warning: str | None
    series: list[Series]
    problems: list[str]  # the history's lines that could not be read
    regressions: frozenset[tuple[str, str]] = frozenset()  # (cell, figure) the gate failed


def history_of(run: ReportRun, folder: Path | None) -> HistoryView | None:
    """What the history in ``folder`` (None: the one the gate judged the run against, if it
    did) holds of this run's cells; None when there is no history to show."""
    if folder is None and run.gate is not None and run.gate.history is not None:
        path = run.gate.history.path
        folder = Path(path).parent if path else None
    if folder is None:
        return None
    history = read_history(folder)
    results = run.results
    ids = [e["run_id"] for e in history.entries]
    before = history.entries[:ids.index(results.run_id)] if results.run_id in ids \
        else history.entries
    # Other machines' runs are shown (with the warning) rather than refused: a page explains.
    entries, warning = comparable(History(history.path, before), results, any_machine=True)
    series = [_series(entries, results, cell.label, figure)
              for figure in (*TIMING, *COUNTS) for cell in results.cells
              if figure in TIMING or cell.sends_email]
    failed = frozenset((c.cell, c.figure) for c in (
        run.gate.history.checks if run.gate is not None and run.gate.history is not None
        else ()) if c.verdict == "fail")
    return HistoryView(history.path, len(entries), warning,
                       [s for s in series if s.earlier or s.now is not None], history.problems,
                       failed)


def _series(entries: list[dict[str, Any]], results: Results, label: str,
            figure: str) -> Series:
    family = "timing" if figure in TIMING else "delivery"
    cell = next(c for c in results.cells if c.label == label)
    earlier = []
    for entry in entries:
        for c in entry["cells"]:
            value = c["figures"].get(figure)
            if c["cell"] == label and family not in c.get("invalid_for", []) \
                    and value is not None:
                earlier.append(Point(entry["run_id"], (entry.get("source") or {}).get("commit"),
                                     float(value)))
    now = None if family in cell.invalid_for else cell.metric(*figure.split(".", 1))
    breaks = change_points([p.value for p in earlier]) if family == "timing" else []
    return Series(label, cell.variant, figure, earlier, now, breaks)


def history_charts(run: ReportRun, view: HistoryView | None, out_dir: Path) -> list[Chart]:
    """A chart per timing figure and one of the email counts, a panel per cell."""
    if view is None or not view.runs:
        return []
    charts = [_figure_chart(view, figure, out_dir) for figure in TIMING]
    charts.append(_counts_chart(view, out_dir))
    return charts


def _commit(point: Point) -> str:
    return (point.commit or "no commit")[:7]


def _panels(count: int) -> tuple[Any, Any, int]:
    rows, cols = grid_shape(count, max_cols=4)
    fig, axes = new_figure(2.9 * cols + 0.4, 2.1 * rows + 0.6, rows, cols)
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_visible(False)
    return fig, axes, cols


def _figure_chart(view: HistoryView, figure: str, out_dir: Path) -> Chart:
    name = "history_" + figure.replace(".", "_")
    title = f"History: {TITLES[figure]}"
    how = ("One panel per cell: its figure in each earlier run of this target, profile and "
           "machine (grey), this run (the large orange dot, right). A dashed line is a change "
           "point the history check found, labelled with the commit of the run the new level "
           "starts at; the band is the last segment's mean ± 2 standard deviations, the level "
           "this run was judged against.")
    series = [s for s in view.series if s.figure == figure]
    if not series:
        return absent(name, title, how, "no cell of this run has this figure")
    fig, axes, cols = _panels(len(series))
    for index, s in enumerate(series):
        ax = axes.flat[index]
        _draw_series(ax, s)
        flagged = (s.cell, s.figure) in view.regressions
        ax.set_title(s.cell + (": regression" if flagged else ""), fontsize=8,
                     color=THIS_RUN if flagged else "black",
                     fontweight="bold" if flagged else "normal")
        if index % cols == 0:
            ax.set_ylabel("ms", fontsize=8)
    fig.suptitle(f"{title}: {view.runs} earlier runs", fontsize=10)
    return save(fig, out_dir, name, title, how)


def _draw_series(ax: Any, s: Series) -> None:
    import numpy as np

    xs = list(range(1, len(s.earlier) + 1))
    values = [p.value for p in s.earlier]
    ax.plot(xs, values, color="#7f7f7f", marker=style(s.variant).marker, markersize=3,
            linewidth=0.8)
    start = s.change_points[-1] if s.change_points else 0
    segment = values[start:]
    if len(segment) >= 2:
        mean, sd = float(np.mean(segment)), float(np.std(segment, ddof=1))
        span = [start + 0.5, len(values) + 1.5]
        ax.fill_between(span, mean - 2 * sd, mean + 2 * sd, color="#56B4E9", alpha=0.2,
                        linewidth=0)
        ax.plot(span, [mean, mean], color="#56B4E9", linewidth=1)
    for index in s.change_points:
        ax.axvline(index + 0.5, color="black", linestyle="--", linewidth=0.8)
        ax.text(index + 0.7, 0.5, _commit(s.earlier[index]), transform=ax.get_xaxis_transform(),
                fontsize=6, va="center", ha="left",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    if s.now is not None:
        ax.plot([len(values) + 1], [s.now], "o", color=THIS_RUN, markersize=7,
                label="this run", zorder=3)
    else:
        panel_note(ax, ["this run: not valid for this figure"])
    if not values:
        panel_note(ax, ["no earlier run"], corner="upper left")
    ax.set_xlim(0.5, len(values) + 1.5)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("run (oldest first)", fontsize=7)


def _counts_chart(view: HistoryView, out_dir: Path) -> Chart:
    name, title = "history_delivery", "History: emails lost, sent twice and failed visibly"
    how = ("One panel per cell that sends email: each earlier run's count of lost (black), "
           "duplicated (blue) and visibly failed (green) emails, this run's on the right in "
           "larger markers. The history check holds this run's counts to the rate its history "
           "allows at most (an exact binomial test), so a history of zeros allows a few.")
    cells = list(dict.fromkeys(s.cell for s in view.series if s.figure in COUNTS))
    if not cells:
        return absent(name, title, how, "no cell of this run sends email")
    fig, axes, _cols = _panels(len(cells))
    colours = {"delivery.missing": "#111111", "delivery.duplicates": "#0072B2",
               "delivery.failed_visibly": "#009E73"}
    from matplotlib.ticker import MaxNLocator

    # Side by side within a run, so that three zeros do not hide each other.
    shift = {"delivery.missing": -0.2, "delivery.duplicates": 0.0,
             "delivery.failed_visibly": 0.2}
    markers = {"delivery.missing": "o", "delivery.duplicates": "s",
               "delivery.failed_visibly": "^"}
    for index, label in enumerate(cells):
        ax = axes.flat[index]
        width, top = 0, 0.0
        for s in view.series:
            if s.cell != label or s.figure not in COUNTS:
                continue
            xs = [x + shift[s.figure] for x in range(1, len(s.earlier) + 1)]
            width = max(width, len(xs))
            values = [p.value for p in s.earlier]
            top = max([top, *values, s.now or 0])
            ax.plot(xs, values, marker=markers[s.figure], markersize=3, linestyle="none",
                    color=colours[s.figure], label=COUNT_NAMES[s.figure])
            if s.now is not None:
                ax.plot([len(s.earlier) + 1 + shift[s.figure]], [s.now],
                        marker=markers[s.figure], markersize=7, linestyle="none",
                        color=colours[s.figure], markeredgecolor=THIS_RUN)
        ax.set_xlim(0.5, width + 1.5)
        ax.set_ylim(-0.5, max(3.0, top * 1.15 + 0.5))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("emails", fontsize=7)
        flagged = any((label, f) in view.regressions for f in COUNTS)
        ax.set_title(label + (": regression" if flagged else ""), fontsize=8,
                     color=THIS_RUN if flagged else "black",
                     fontweight="bold" if flagged else "normal")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("run (oldest first)", fontsize=7)
        if index == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{title}: {view.runs} earlier runs", fontsize=10)
    return save(fig, out_dir, name, title, how)
