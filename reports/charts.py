"""The charts drawn from results.json alone: one function per chart, ``(run, out_dir) -> Chart``.

Each writes ``out_dir/<name>.png`` and ``.svg`` (see :func:`reports.figures.save`). A cell the
run lacks is named under the panel that lacks it (and in ``Chart.note``), never drawn as a zero
and never written over the data; a chart that has nothing to show returns an absent Chart whose
note says why. Charts are laid out for the size the report shows them: no wider than the page,
tick labels measured after layout and thinned, stacked or turned where they would crowd.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.cellfiles import Load
from loadtests.results import WAIT_MARKS, CellResult
from loadtests.stats import GOOD_MS, POOR_MS
from reports.data import Condition, ReportRun
from reports.figures import (
    Chart,
    absent,
    grid_shape,
    latency_axis,
    legend,
    load_text,
    new_figure,
    plain_ticks,
    save,
)
from reports.style import (
    DUPLICATE_HATCH,
    GOOD_COLOR,
    MISSING_COLOR,
    NEEDS_IMPROVEMENT_COLOR,
    POOR_COLOR,
    style,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

NO_CELLS = "the run finished no cell, so there is nothing to draw"
NOT_RUN = "not run"
# report.html shows a chart at most 1280 px minus its padding wide, at 100 px per inch: a wider
# figure is shrunk on the page, its text with it.
PAGE_WIDTH_IN = 12.3
NOTE_FONTSIZE = 8
NOTE_LINE_IN = NOTE_FONTSIZE * 1.25 / 72
NOTE_CHAR_IN = NOTE_FONTSIZE * 0.6 / 72  # a wide italic character, so a wrapped line fits


# -- layout shared with reports.sample_charts ---------------------------------------------------

def on_page(width_in: float) -> float:
    """``width_in``, but no wider than the page: report.html shrinks a wider chart, and its text
    with it, until the text cannot be read. A chart of one bar per cell gets thinner bars."""
    return min(PAGE_WIDTH_IN, width_in)


def note_under(ax: Axes, lines: Sequence[str], width_in: float) -> int:
    """Write what a panel lacks under its x label, wrapped to ``width_in``; return the lines
    written, so the caller can make the figure that much taller.

    Under the axes, not in a corner of them: wherever a corner is, some run's data sits in it.
    Anchored to the x label, so constrained layout makes room for the note below it.
    """
    wrapped = [part for line in lines
               for part in textwrap.wrap(line, max(20, int(width_in / NOTE_CHAR_IN)))]
    if wrapped:
        # 7 points down: the box's own padding (4 points) and a gap under the x label.
        ax.annotate("\n".join(wrapped), xy=(0.5, 0), xycoords=ax.xaxis.label, xytext=(0, -7),
                    textcoords="offset points", ha="center", va="top",
                    fontsize=NOTE_FONTSIZE, style="italic",
                    bbox={"facecolor": "white", "edgecolor": "#999999", "pad": 4})
    return len(wrapped)


def grow_for_notes(fig: Figure, lines_per_row: Sequence[int]) -> None:
    """Make the figure taller by the notes under each row of panels, so they take room from
    the page and not from the data."""
    # 0.15 in a note: its offset under the x label and its box's padding (11 points).
    extra = sum(NOTE_LINE_IN * lines + 0.15 for lines in lines_per_row if lines)
    if extra:
        fig.set_figheight(fig.get_figheight() + extra)


def what_lacks(lacking: Sequence[tuple[str, str, str]],
               places: dict[str, int] | None = None) -> list[str]:
    """``(variant, where, why)`` as one line per variant and reason, ``sync @ 20rps, 24rps:
    not run``, so a capacity run's skipped steps make one line, not one each. A variant that
    lacks it in all its ``places`` is not followed by them, and shares its line with the
    others for the same reason: ``baseline, sync: no queue``."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for variant, where, why in lacking:
        grouped[variant, why].append(where)
    everywhere: dict[str, list[str]] = defaultdict(list)
    lines = []
    for (variant, why), wheres in grouped.items():
        # Any other reason is "everywhere" when it holds wherever the variant did run.
        ran = (places or {}).get(variant, -1) - (
            0 if why == NOT_RUN else len(grouped.get((variant, NOT_RUN), [])))
        if len(wheres) == ran:
            everywhere[why].append(variant)
        else:
            lines.append(f"{variant} @ {', '.join(wheres)}: {why}")
    return [f"{', '.join(variants)}: {why}" for why, variants in everywhere.items()] + lines


def _crowded(boxes: Sequence[Bbox], pad: float) -> bool:
    """Whether two neighbouring labels (left to right) are closer than ``pad`` pixels."""
    order = sorted(boxes, key=lambda box: box.x0)
    return any(b.x0 - a.x1 < pad for a, b in zip(order, order[1:], strict=False))


def _label_boxes(fig: Figure, ax: Axes) -> list[Bbox]:
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    return [label.get_window_extent(renderer) for label in ax.get_xticklabels()
            if label.get_visible() and label.get_text()]


def _label_pad(fig: Figure, ax: Axes) -> float:
    """Half a label's height in pixels: labels closer than that read as one number."""
    labels = ax.get_xticklabels()
    size = labels[0].get_fontsize() if labels else 10
    return 0.5 * float(size) * fig.dpi / 72


def label_what_fits(fig: Figure, axes: Sequence[Axes]) -> None:
    """On a numeric x axis with a tick at every value (the run's rates or latencies), label
    the ticks that have room and keep the others as unlabelled ticks: close steps (12, 14, 15,
    16/s on a log axis) would print over each other. Measured after constrained layout, at
    the size the report shows; the first and the last value keep their labels."""
    from matplotlib.ticker import NullFormatter

    fig.draw_without_rendering()
    for ax in axes:
        locs = list(ax.get_xticks())
        labels = [label.get_text() for label in ax.get_xticklabels()]
        boxes, pad = _label_boxes(fig, ax), _label_pad(fig, ax)
        if len(boxes) != len(locs) or not _crowded(boxes, pad):
            continue
        keep: list[int] = []
        for i, box in enumerate(boxes):
            if not keep or box.x0 - boxes[keep[-1]].x1 >= pad:
                keep.append(i)
        last = len(boxes) - 1
        if keep[-1] != last:
            while keep and boxes[last].x0 - boxes[keep[-1]].x1 < pad:
                keep.pop()
            keep.append(last)
        ax.set_xticks([locs[i] for i in keep], labels=[labels[i] for i in keep])
        ax.set_xticks([loc for i, loc in enumerate(locs) if i not in keep], minor=True)
        ax.xaxis.set_minor_formatter(NullFormatter())


def condition_labels(conditions: Sequence[Condition]) -> tuple[list[str], str]:
    """Each condition's label without the parts every condition shares (a capacity run's one
    SMTP latency, a profile's one rate), and those parts, for the axis label: the parts
    that tell the conditions apart then fit side by side."""
    parts = [c.label.split(" · ") for c in conditions]
    shared = [i for i in (0, 1) if len(conditions) > 1 and len({p[i] for p in parts}) == 1]
    labels = [" · ".join(part for i, part in enumerate(p) if i not in shared) for p in parts]
    return labels, " · ".join(parts[0][i] for i in shared)


def fit_condition_labels(fig: Figure, axes: Sequence[Axes], labels: Sequence[str],
                         **text: Any) -> None:
    """Label a categorical x axis (one tick per condition, e.g. ``500 ms · 10rps ·
    consumer-crash``) so that no two labels touch: on one line; else each part on a line of
    its own; else the same on a figure widened to the page; else upright on one line. A
    condition's label says which cell a bar or a point is, so none is left out."""
    stacked = [label.replace(" · ", "\n") for label in labels]
    width = fig.get_figwidth()
    tries: list[tuple[Sequence[str], float, float]] = []
    for attempt in ((labels, width, 0), (stacked, width, 0), (stacked, PAGE_WIDTH_IN, 0),
                    (labels, max(width, PAGE_WIDTH_IN), 90)):
        if attempt not in tries and attempt[1] >= width:
            tries.append(attempt)
    for names, figwidth, rotation in tries:
        fig.set_figwidth(figwidth)
        for ax in axes:
            ax.set_xticks(range(len(names)), labels=list(names), rotation=rotation, **text)
        fig.draw_without_rendering()
        if not any(_crowded(_label_boxes(fig, ax), _label_pad(fig, ax)) for ax in axes):
            return


def register_vs_latency(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "register_vs_latency", "Sign-up response time against SMTP latency"
    load = run.focus_load
    how = (f"Lower is better. Each line is a variant at {load_text(load)}; the shaded grey "
           "band is the baseline, which sends no email: the floor any variant can reach. The "
           "dotted diagonal is a response that waits exactly the SMTP latency.")
    if not run.cells:
        return absent(name, title, how, NO_CELLS)
    stats = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
    fig, axes = new_figure(12, 4.2, 1, 3, sharey=True)
    values = [c.metric("register", key) for c in run.cells for key, _ in stats]
    positive = [v for v in values if v]
    floor = min(positive, default=1.0) / 2
    missing = [(v, f"{lat} ms", NOT_RUN) for v in run.variants for lat in run.latencies
               if run.at(v, lat, load) is None]
    xlabel = ""
    for ax, (key, label) in zip(axes[0], stats, strict=True):
        xlabel = latency_axis(ax, run.latencies)
        for variant in run.variants:
            points = [(lat, cell.metric("register", key)) for lat in run.latencies
                      if (cell := run.at(variant, lat, load)) is not None]
            points = [(x, y) for x, y in points if y]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            st = style(variant)
            is_floor = variant == "baseline"
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=st.linestyle,
                    linewidth=3 if is_floor else 1.8, markersize=6, zorder=3,
                    label="baseline (floor: sends no email)" if is_floor else variant)
            if is_floor and len(xs) > 1:
                ax.fill_between(xs, floor, ys, color=st.color, alpha=0.18, zorder=1)
            elif is_floor:  # one latency: a band across the panel up to the baseline
                ax.axhspan(floor, ys[0], color=st.color, alpha=0.18, zorder=1)
        diagonal = [lat for lat in run.latencies if lat > 0]
        if diagonal:
            ax.plot(diagonal, diagonal, color="black", linestyle=(0, (1, 2)), linewidth=1,
                    zorder=2, label="response = SMTP latency")
        ax.set_yscale("log")
        plain_ticks(ax.yaxis)
        ax.set_title(f"register {label}")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylim(floor, max(positive, default=floor * 10) * 1.6)  # shared by all three
    axes[0][0].set_ylabel("POST /register response time (ms, log scale)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    note = None
    if missing:
        note = "not run: " + ", ".join(f"{v} @ {where}" for v, where, _ in missing)
        # The same cells are missing from all three panels: one note, under the last.
        places = {v: len(run.latencies) for v in run.variants}
        grow_for_notes(fig, [note_under(axes[0][2], what_lacks(missing, places), 3.8)])
    fig.suptitle(f"{title} ({load_text(load)})")
    label_what_fits(fig, list(axes[0]))
    return save(fig, out_dir, name, title, how, note)


def inp_proxy_bands(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "inp_proxy", "What the person waits, p75, per variant and SMTP latency"
    load = run.focus_load
    how = (f"Bars at {load_text(load)}; the background says how a p75 like this would be "
           f"rated as INP: good up to {GOOD_MS:g} ms, poor above {POOR_MS:g} ms. A bar in the "
           "red band is a sign-up a person feels stall. Under each bar, where its figure comes "
           "from: B, click to confirmation painted in Chromium; C, the INP proxy (response "
           "time plus a render allowance) calibrated in Chromium on baseline; P, the proxy "
           "with its assumed allowance, not a browser measurement.")
    if not run.cells:
        return absent(name, title, how, NO_CELLS)
    from matplotlib.ticker import NullLocator

    variants, lats = run.variants, run.latencies
    values = [c.wait.p75_ms for c in run.cells]
    measured = [v for v in values if v]
    low = min([*measured, GOOD_MS]) / 3
    high = max([*measured, POOR_MS]) * 4
    fig, axes = new_figure(on_page(max(7.0, 1.0 + 0.55 * len(lats) * len(variants))), 4.6)
    ax = axes[0][0]
    ax.set_yscale("log")
    plain_ticks(ax.yaxis)
    ax.set_ylim(low, high)
    for lo, hi, color in ((low, GOOD_MS, GOOD_COLOR), (GOOD_MS, POOR_MS, NEEDS_IMPROVEMENT_COLOR),
                          (POOR_MS, high, POOR_COLOR)):
        ax.axhspan(lo, hi, color=color, zorder=0)
    # The bands' names go beside the axes, as labels of a right-hand axis: written inside,
    # at the right edge, they sat on the last variant's bar whenever it reached their height.
    bands = ax.secondary_yaxis("right")
    bands.set_yticks([(low * GOOD_MS) ** 0.5, (GOOD_MS * POOR_MS) ** 0.5, (POOR_MS * high) ** 0.5],
                     labels=[f"good ≤ {GOOD_MS:g} ms", "needs\nimprovement",
                             f"poor > {POOR_MS:g} ms"],
                     fontsize=8, style="italic", color="#333333")
    bands.tick_params(length=0)
    bands.yaxis.set_minor_locator(NullLocator())
    width = 0.8 / max(len(variants), 1)
    missing: list[str] = []
    labelled: set[str] = set()
    for i, lat in enumerate(lats):
        for j, variant in enumerate(variants):
            x = i + (j - (len(variants) - 1) / 2) * width
            cell = run.at(variant, lat, load)
            wait = cell.wait if cell else None
            value = wait.p75_ms if wait else None
            if value is None:
                missing.append(f"{variant} @ {lat} ms")
                ax.text(x, low * 1.15, "not run" if cell is None else "no data", rotation=90,
                        ha="center", va="bottom", fontsize=7, style="italic")
                continue
            st = style(variant)
            ax.bar(x, value - low, bottom=low, width=width * 0.92, color=st.color,
                   hatch=st.hatch, edgecolor="black", linewidth=0.6, zorder=2,
                   label=None if variant in labelled else variant)
            labelled.add(variant)
            ax.text(x, value * 1.08, f"{value:.0f}", ha="center", va="bottom", fontsize=7)
            if wait is not None:
                ax.text(x, low * 1.15, WAIT_MARKS[wait.source], ha="center", va="bottom",
                        fontsize=7, weight="bold", zorder=3)
    ax.set_xticks(range(len(lats)), labels=[f"SMTP {lat} ms" for lat in lats])
    ax.set_xlim(-0.6, len(lats) - 0.4)
    ax.set_ylabel("person waits p75 (ms, log scale)")
    ax.set_xlabel(f"SMTP latency, {load_text(load)}")
    legend(ax, fontsize=8, loc="upper left", ncols=min(4, len(variants)))
    ax.set_title(f"{title} ({load_text(load)})")
    note = ("not measured: " + ", ".join(missing)) if missing else None
    return save(fig, out_dir, name, title, how, note)


def _loads_of_focus(run: ReportRun) -> list[Load]:
    """The run's loads of the same kind as its focus load (rates, or users), ascending."""
    focus = run.focus_load
    if focus is None:
        return []
    return [load for load in run.loads if bool(load.rate) == bool(focus.rate)]


def _load_axis(loads: list[Load]) -> tuple[list[float], str]:
    if loads and loads[0].rate:
        return [load.rate for load in loads], "offered sign-ups per second (log scale)"
    return [float(load.users) for load in loads], "concurrent users (log scale)"


def _against_load(run: ReportRun, out_dir: Path, name: str, title: str, how: str,
                  ylabel: str, pick: Any) -> Chart:
    """One panel per SMTP latency, one line per variant: ``pick(cell)`` against the load."""
    if not run.cells:
        return absent(name, title, how, NO_CELLS)
    loads = _loads_of_focus(run)
    if len(loads) < 2:
        shown = ", ".join(load.title for load in loads) or "none"
        return absent(name, title, how, f"not drawn: this profile runs one load ({shown}), so "
                                        "there is no curve against load; each cell's figures "
                                        "are in the tables")
    from matplotlib.ticker import NullFormatter

    xs_all, xlabel = _load_axis(loads)
    rows, cols = grid_shape(len(run.latencies))
    fig, axes = new_figure(4.2 * cols, 3.4 * rows + 0.5, rows, cols, sharey=True)
    missing = []
    note_lines = [0] * rows
    for index, lat in enumerate(run.latencies):
        ax = axes[index // cols][index % cols]
        lacking: list[tuple[str, str, str]] = []
        for variant in run.variants:
            points = []
            for x, load in zip(xs_all, loads, strict=True):
                cell = run.cell(variant, lat, load)
                value = pick(cell) if cell else None
                if value:
                    points.append((x, value))
                else:
                    lacking.append((variant, load.short,
                                    NOT_RUN if cell is None else "none measured"))
            if points:
                st = style(variant)
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=st.linestyle,
                        label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_ticks(ax.yaxis)
        ax.set_xticks(xs_all, labels=[f"{x:g}" for x in xs_all])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"SMTP latency {lat} ms", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        lines = note_under(ax, what_lacks(lacking, {v: len(loads) for v in run.variants}),
                           3.8)
        note_lines[index // cols] = max(note_lines[index // cols], lines)
        missing += [f"{lat} ms: {v} @ {where}: {why}" for v, where, why in lacking]
    for index in range(len(run.latencies), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    for row in axes:
        row[0].set_ylabel(ylabel)
    legend(axes[0][0], fontsize=8)
    fig.suptitle(title)
    grow_for_notes(fig, note_lines)
    label_what_fits(fig, [ax for ax in axes.flat if ax.get_visible()])
    return save(fig, out_dir, name, title, how, "; ".join(missing) or None)


def throughput_vs_load(run: ReportRun, out_dir: Path) -> Chart:
    return _against_load(
        run, out_dir, "throughput_vs_load", "Throughput against load",
        "Higher is better: completed sign-ups per second (registered and verified; baseline "
        "sends nothing, so its registrations count) as the load grows, one panel per SMTP "
        "latency. In open loop a variant that keeps up sits on the offered rate; where its "
        "line falls below the others, it could not.",
        "completed sign-ups per second (log)", lambda cell: cell.throughput_rps)


def latency_vs_load(run: ReportRun, out_dir: Path) -> Chart:
    return _against_load(
        run, out_dir, "latency_vs_load", "Sign-up response time against load",
        "Lower is better: register p95, from when each sign-up should have started, as the "
        "offered load grows, one panel per SMTP latency. A flat line is a variant with room to "
        "spare; the bend upward (the hockey stick) is where it saturates and requests queue.",
        "register p95 (ms, log)", lambda cell: cell.metric("register", "p95_ms"))


def delivery(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "delivery", "Delivery: delivered, missing and duplicated emails"
    how = ("Each bar is one cell's accepted registrations: the variant's colour reached the "
           "inbox, black never arrived (lost), the ringed block on top are duplicates. A full "
           "bar with nothing black or ringed means no email was lost or doubled; baseline's "
           "dashed outline means it sends nothing by design.")
    conditions = _conditions_run(run)
    if not conditions:
        return absent(name, title, how, NO_CELLS)
    variants = run.variants
    width = 0.8 / max(len(variants), 1)
    fig, axes = new_figure(on_page(max(7.0, 1.2 + 0.5 * len(conditions) * len(variants))), 4.6)
    ax = axes[0][0]
    top = 100.0
    notes: list[str] = []
    for i, cond in enumerate(conditions):
        for j, variant in enumerate(variants):
            x = i + (j - (len(variants) - 1) / 2) * width
            cell = run.results.cell(cond.key(variant))
            if cell is None and not run.in_grid(variant, cond):
                continue  # not in the grid: nothing to say
            top = max(top, _delivery_bar(ax, x, width * 0.92, variant, cell, notes, cond))
    ax.set_ylim(0, top * 1.45)
    ax.set_xlim(-0.6, len(conditions) - 0.4)
    ax.set_ylabel("share of accepted registrations (%)")
    names, shared = condition_labels(conditions)
    ax.set_xlabel("cell: SMTP latency · load" + (f" (every cell at {shared})" if shared else ""))
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    # Always explain the two blocks a reader looks for, even when this run has none of them.
    unique.setdefault("missing (never arrived)", Patch(facecolor=MISSING_COLOR,
                                                       edgecolor="black"))
    unique.setdefault("duplicate", Patch(facecolor="white", hatch=DUPLICATE_HATCH,
                                         edgecolor="black"))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left",
              ncols=min(4, len(unique)))
    ax.set_title(title)
    fit_condition_labels(fig, [ax], names)
    return save(fig, out_dir, name, title, how, "; ".join(notes) or None)


def _delivery_bar(ax: Axes, x: float, width: float, variant: str, cell: CellResult | None,
                  notes: list[str], cond: Condition) -> float:
    """Draw one cell's stacked delivery bar; return its top (%) so the axis fits it."""
    st = style(variant)
    label_y = 2.0
    if cell is None:
        notes.append(f"{variant} @ {cond.label}: not run")
        ax.text(x, label_y, "not run", rotation=90, ha="center", va="bottom",
                fontsize=7, style="italic")
        return 100.0
    d = cell.delivery
    if not cell.sends_email:
        ax.bar(x, 100, width=width, fill=False, edgecolor=st.color, linestyle="--",
               linewidth=1.2, label=f"{variant} (sends nothing)")
        ax.text(x, 50, "sends nothing", rotation=90, ha="center", va="center",
                fontsize=7, style="italic")
        return 100.0
    registered = d.registered
    if not registered:
        notes.append(f"{variant} @ {cond.label}: no accepted registration")
        ax.text(x, label_y, "no sign-ups", rotation=90, ha="center", va="bottom",
                fontsize=7, style="italic")
        return 100.0
    shares = [100 * d.delivered / registered, 100 * d.missing / registered,
              100 * d.duplicates / registered]
    bottom = 0.0
    blocks: tuple[dict[str, Any], ...] = (
        {"color": st.color, "hatch": st.hatch, "label": variant},
        {"color": MISSING_COLOR, "label": "missing (never arrived)"},
        {"color": "white", "hatch": DUPLICATE_HATCH, "label": "duplicate"})
    for share, kwargs in zip(shares, blocks, strict=True):
        if share > 0:
            ax.bar(x, share, bottom=bottom, width=width, edgecolor="black",
                   linewidth=0.6, **kwargs)
            bottom += share
    text = f"{d.delivered}/{registered}"
    if d.missing:
        text += f", {d.missing} lost"
    if d.duplicates:
        text += f", {d.duplicates} dup"
    ax.text(x, bottom + 2, text, rotation=90, ha="center", va="bottom", fontsize=7)
    return bottom


def resources(run: ReportRun, out_dir: Path) -> Chart:
    name, title = "resources", "Peak live threads and queue depth against load"
    how = ("What each variant spends to stay fast: left, the most threads the app's processes "
           "had alive at once; right, the most email tasks waiting in the queue (only queued "
           "has one). A line that climbs with SMTP latency or load is a cost that grows "
           "with load.")
    conditions = _conditions_run(run)
    if not conditions:
        return absent(name, title, how, NO_CELLS)
    fig, axes = new_figure(on_page(max(9.0, 2 + 1.1 * len(conditions))), 4.2, 1, 2)
    notes = []
    note_lines = 0
    xs = list(range(len(conditions)))
    places = {v: sum(run.in_grid(v, cond) for cond in conditions) for v in run.variants}
    labels, shared = condition_labels(conditions)
    xlabel = "SMTP latency and load (rps: sign-ups per second offered)"
    # The model's null peak queue depth means the variant has no queue: not a gap to report.
    for ax, key, label, none in (
            (axes[0][0], "peak_threads", "peak live threads (app processes)", "not measured"),
            (axes[0][1], "peak_queue_depth", "peak queue depth (tasks)", "no queue")):
        lacking: list[tuple[str, str, str]] = []
        for variant in run.variants:
            ys = []
            for cond in conditions:
                cell = run.results.cell(cond.key(variant))
                value = cell.metric("resources", key) if cell else None
                ys.append(float("nan") if value is None else value)
                if value is None and run.in_grid(variant, cond):
                    lacking.append((variant, cond.label, NOT_RUN if cell is None else none))
            st = style(variant)
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=st.linestyle,
                    label=variant, markersize=7, markerfacecolor="white"
                    if variant == "baseline" else st.color)
        ax.set_xlabel(xlabel + (f"\nevery cell at {shared}" if shared else ""))
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        # Under the panel, a condition is named as on its axis: without what every cell shares.
        named = dict(zip((c.label for c in conditions), labels, strict=True))
        note_lines = max(note_lines, note_under(
            ax, what_lacks([(v, named[where], why) for v, where, why in lacking], places),
            fig.get_figwidth() / 2 - 0.6))
        gaps = [entry for entry in lacking if entry[2] != "no queue"]
        if gaps:
            notes.append(f"{label}: " + "; ".join(what_lacks(gaps, places)))
    legend(axes[0][0], fontsize=8)
    fig.suptitle(title)
    grow_for_notes(fig, [note_lines])
    fit_condition_labels(fig, list(axes[0]), labels, fontsize=8)
    return save(fig, out_dir, name, title, how, "; ".join(notes) or None)


def _conditions_run(run: ReportRun) -> list[Condition]:
    """The grid's conditions that have at least one cell."""
    return [c for c in run.conditions
            if any(run.results.cell(c.key(v)) for v in run.variants)]
