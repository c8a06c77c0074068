"""The charts drawn from every kept sample (each cell's samples file), one function each.

Same contract as :mod:`reports.charts`: ``(run, out_dir) -> Chart``; a cell that did not run
or whose samples were not kept is named under its panel (inside it, where the panel is that one
cell and empty) and in ``Chart.note``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loadtests import cellfiles
from loadtests.results import CellResult
from reports.charts import NOT_RUN, grow_for_notes, note_under, what_lacks
from reports.data import ReportRun
from reports.figures import (
    Chart,
    absent,
    grid_shape,
    load_text,
    ms_axis,
    new_figure,
    panel_note,
    plain_ticks,
    save,
)
from reports.style import MISSING_COLOR, style

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes

    from loadtests.cellfiles import CellSamples


def inbox_cdf(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "time_to_inbox_cdf", "Time to inbox: CDF per variant"
    load = run.focus_load
    how = (f"Read across at 0.5 for the median and at 0.95 for p95: the further left a curve, "
           f"the sooner the email is in the inbox ({load_text(load)}, warm-up excluded). The "
           "dotted line is the injected SMTP latency. A curve that stops short of 1 lost "
           "emails: the share never arrived within the inbox deadline.")
    if not run.cells:
        return absent(name, title, how, "the run finished no cell, so there is nothing to draw")
    import numpy as np

    rows, cols = grid_shape(len(run.latencies))
    fig, axes = new_figure(4.4 * cols, 3.5 * rows + 0.6, rows, cols, sharey=True)
    notes: list[str] = []
    note_lines = [0] * rows
    for index, lat in enumerate(run.latencies):
        ax = axes[index // cols][index % cols]
        lacking: list[tuple[str, str, str]] = []
        spans: list[tuple[float, float]] = []
        for variant in run.variants:
            cell = run.at(variant, lat, load)
            if cell is None:
                lacking.append((variant, "", NOT_RUN))
                continue
            if not cell.sends_email:
                lacking.append((variant, "", "sends no email"))
                continue
            samples = run.samples(cell)
            if samples is None:
                lacking.append((variant, "", "no samples kept"))
                continue
            series = samples[cellfiles.TIME_TO_INBOX]
            arrived = np.asarray(series.times)
            total = int(series.measured.sum())
            if not total:
                lacking.append((variant, "", "no email measured"))
                continue
            _step_cdf(ax, arrived, total, variant)
            if len(arrived):
                spans.append((float(arrived.min()), float(arrived.max())))
        if lat > 0:
            ax.axvline(lat, color="black", linestyle=(0, (1, 2)), linewidth=1,
                       label="injected SMTP latency")
            spans.append((float(lat), float(lat)))
        scale = "linear"
        if spans:
            scale = ms_axis(ax, min(s[0] for s in spans), max(s[1] for s in spans))
        ax.set_ylim(0, 1.02)
        ax.set_title(f"SMTP latency {lat} ms", fontsize=10)
        ax.set_xlabel(f"time to inbox (ms, {scale})")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        lines = note_under(ax, what_lacks(lacking, {v: 1 for v in run.variants}), 4.0)
        note_lines[index // cols] = max(note_lines[index // cols], lines)
        notes += [f"{lat} ms: {variant}: {why}" for variant, _, why in lacking
                  if why != "sends no email"]
    for index in range(len(run.latencies), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    for row in axes:
        row[0].set_ylabel("share of emails in the inbox")
    fig.suptitle(f"{title} ({load_text(load)})")
    grow_for_notes(fig, note_lines)
    return save(fig, out_dir, name, title, how, "; ".join(notes) or None)


def _step_cdf(ax: Axes, arrived: np.ndarray, total: int, variant: str) -> None:
    import numpy as np

    st = style(variant)
    xs = np.sort(arrived)
    ys = np.arange(1, len(xs) + 1) / total
    lost = total - len(xs)
    label = variant + (f" ({lost} of {total} never arrived)" if lost else "")
    if len(xs):
        ax.step(xs, ys, where="post", color=st.color, linestyle=st.linestyle, linewidth=1.8,
                label=label)
        # A marker at the median: the line style alone is hard to follow where curves cross.
        mid = min(len(xs) - 1, int(np.searchsorted(ys, 0.5)))
        ax.plot([xs[mid]], [ys[mid]], marker=st.marker, color=st.color, linestyle="none")


def response_over_time(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "register_over_time", "Sign-up response time over each cell's run"
    how = ("One panel per cell: every POST /register as a dot at the moment it was sent, the "
           "black line its per-second median, the grey band the warm-up (left out of every "
           "statistic), crosses the failed requests. Look for a slow start, a line that "
           "climbs (saturation) or a gap (a stall).")
    conditions = [c for c in run.conditions
                  if any(run.results.cell(c.key(v)) for v in run.variants)]
    if not conditions:
        return absent(name, title, how, "the run finished no cell, so there is nothing to draw")
    variants = run.variants
    fig, axes = new_figure(2.9 * len(variants) + 0.8, 1.9 * len(conditions) + 1.1,
                           len(conditions), len(variants), sharex=True, sharey=True)
    notes: list[str] = []
    for r, cond in enumerate(conditions):
        for c, variant in enumerate(variants):
            ax = axes[r][c]
            ax.set_title(f"{variant} · {cond.label}", fontsize=9)
            cell = run.results.cell(cond.key(variant))
            samples = run.samples(cell) if cell else None
            if cell is None and not run.in_grid(variant, cond):
                panel_note(ax, ["not in the grid"])  # e.g. the baseline under a fault
                continue
            if cell is None or not samples or cellfiles.REGISTER not in samples:
                why = "not run" if cell is None else "no samples kept"
                panel_note(ax, [why])
                notes.append(f"{variant} @ {cond.label}: {why}")
                continue
            _over_time_panel(ax, samples, cell)
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the cell started")
    for row in axes:
        row[0].set_ylabel("response (ms, log)", fontsize=8)
    axes[0][0].set_yscale("log")
    plain_ticks(axes[0][0].yaxis)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8,
                   markerscale=3)
    fig.suptitle(title)
    return save(fig, out_dir, name, title, how, "; ".join(notes) or None)


def _over_time_panel(ax: Axes, samples: CellSamples, cell: CellResult) -> None:
    import numpy as np

    st = style(cell.variant)
    series = samples[cellfiles.REGISTER]
    t0 = min(float(s.start.min()) for s in samples.values() if len(s.start))
    t = series.start - t0
    ok = series.ok
    warm_end = _warmup_end(samples, t0, cell.warmup_s)
    if warm_end is not None:
        ax.axvspan(0, warm_end, color="#d9d9d9", zorder=0, label="warm-up (not measured)")
    few = ok.sum() < 1000  # a slow cell has few requests: bigger dots so they show at all
    ax.scatter(t[ok], series.latency[ok], s=9 if few else 3, color=st.color, marker=".",
               linewidths=0, alpha=0.8 if few else 0.4, rasterized=True, zorder=3,
               label="a request")
    if (~ok).any():
        ax.scatter(t[~ok], series.latency[~ok], s=14, color=MISSING_COLOR, marker="x",
                   linewidths=0.8, zorder=4, label="failed request")
    if ok.any():
        seconds = np.floor(t[ok]).astype(int)
        order = np.argsort(seconds, kind="stable")
        bins, starts = np.unique(seconds[order], return_index=True)
        medians = [float(np.median(chunk)) for chunk in np.split(series.latency[ok][order],
                                                                   starts[1:])]
        # A second with no request breaks the line, so a stall shows as a gap.
        xs: list[float] = []
        ys: list[float] = []
        for second, median in zip(bins, medians, strict=True):
            if xs and second - (xs[-1] - 0.5) > 1:
                xs.append(float("nan"))
                ys.append(float("nan"))
            xs.append(second + 0.5)
            ys.append(median)
        ax.plot(xs, ys, color="black", linewidth=0.9, alpha=0.8, zorder=2, marker="_",
                markersize=7, label="per-second median")
    ax.grid(True, alpha=0.3)


def _warmup_end(samples: CellSamples, t0: float, warmup_s: float | None) -> float | None:
    """Seconds from t0 to the end of the warm-up: t0 + the cell's warmup_s, kept between the
    last warm-up sample and the first measured one (samples are flagged by start time)."""
    warm = [float(s.start[s.warmup].max()) - t0 for s in samples.values() if s.warmup.any()]
    if not warm:
        return None
    latest_warm = max(warm)
    measured = [float(s.start[~s.warmup].min()) - t0 for s in samples.values()
                if (~s.warmup).any()]
    first_measured = min(measured, default=latest_warm)
    if warmup_s is None:
        return latest_warm
    return min(max(float(warmup_s), latest_warm), first_measured)
