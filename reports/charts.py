"""The charts drawn from results.json alone: one function per chart, ``(run, out_dir) -> Chart``.

Each writes ``out_dir/<name>.png`` and ``.svg`` (see :func:`reports.figures.save`). A cell the
run lacks is named in the chart (and in ``Chart.note``), never drawn as a zero; a chart that
has nothing to show returns an absent Chart whose note says why.
"""

from __future__ import annotations

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
    panel_note,
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

NO_CELLS = "the run finished no cell, so there is nothing to draw"


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
    missing = [f"{v} @ {lat} ms" for v in run.variants for lat in run.latencies
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
        note = "not run: " + ", ".join(missing)
        panel_note(axes[0][2], ["not run:", *missing])
    fig.suptitle(f"{title} ({load_text(load)})")
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
    variants, lats = run.variants, run.latencies
    values = [c.wait.p75_ms for c in run.cells]
    measured = [v for v in values if v]
    low = min([*measured, GOOD_MS]) / 3
    high = max([*measured, POOR_MS]) * 4
    fig, axes = new_figure(max(7.0, 1.0 + 0.55 * len(lats) * len(variants)), 4.6)
    ax = axes[0][0]
    ax.set_yscale("log")
    plain_ticks(ax.yaxis)
    ax.set_ylim(low, high)
    for lo, hi, color in ((low, GOOD_MS, GOOD_COLOR), (GOOD_MS, POOR_MS, NEEDS_IMPROVEMENT_COLOR),
                          (POOR_MS, high, POOR_COLOR)):
        ax.axhspan(lo, hi, color=color, zorder=0)
    for text, y in ((f"good ≤ {GOOD_MS:g} ms", (low * GOOD_MS) ** 0.5),
                    ("needs improvement", (GOOD_MS * POOR_MS) ** 0.5),
                    (f"poor > {POOR_MS:g} ms", (POOR_MS * high) ** 0.5)):
        ax.text(1.0, y, text + " ", transform=ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=8, style="italic", color="#333333")
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
    for index, lat in enumerate(run.latencies):
        ax = axes[index // cols][index % cols]
        lacking = []
        for variant in run.variants:
            points = []
            for x, load in zip(xs_all, loads, strict=True):
                cell = run.cell(variant, lat, load)
                value = pick(cell) if cell else None
                if value:
                    points.append((x, value))
                else:
                    lacking.append(f"{variant} @ {load.short}: "
                                   f"{'not run' if cell is None else 'none measured'}")
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
        panel_note(ax, lacking)
        missing += [f"{lat} ms: {text}" for text in lacking]
    for index in range(len(run.latencies), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    for row in axes:
        row[0].set_ylabel(ylabel)
    legend(axes[0][0], fontsize=8)
    fig.suptitle(title)
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
    fig, axes = new_figure(max(7.0, 1.2 + 0.5 * len(conditions) * len(variants)), 4.6)
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
    ax.set_xticks(range(len(conditions)), labels=[c.label for c in conditions])
    ax.set_xlim(-0.6, len(conditions) - 0.4)
    ax.set_ylabel("share of accepted registrations (%)")
    ax.set_xlabel("cell: SMTP latency · load")
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
    fig, axes = new_figure(max(9.0, 2 + 1.1 * len(conditions)), 4.2, 1, 2)
    notes = []
    xs = list(range(len(conditions)))
    for ax, key, label in ((axes[0][0], "peak_threads", "peak live threads (app processes)"),
                           (axes[0][1], "peak_queue_depth", "peak queue depth (tasks)")):
        lacking = []
        for variant in run.variants:
            ys = []
            for cond in conditions:
                cell = run.results.cell(cond.key(variant))
                value = cell.metric("resources", key) if cell else None
                ys.append(float("nan") if value is None else value)
                if value is None and run.in_grid(variant, cond):
                    lacking.append(f"{variant} @ {cond.label}")
            st = style(variant)
            ax.plot(xs, ys, color=st.color, marker=st.marker, linestyle=st.linestyle,
                    label=variant, markersize=7, markerfacecolor="white"
                    if variant == "baseline" else st.color)
        ax.set_xticks(xs, labels=[c.label.replace(" · ", "\n") for c in conditions],
                      fontsize=8)
        ax.set_xlabel("SMTP latency and load (rps: sign-ups per second offered)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if lacking:
            panel_note(ax, ["not measured:", *lacking[:6]]
                       + ([f"... {len(lacking) - 6} more"] if len(lacking) > 6 else []))
            notes.append(f"{label}: not measured for " + ", ".join(lacking))
    legend(axes[0][0], fontsize=8)
    fig.suptitle(title)
    return save(fig, out_dir, name, title, how, "; ".join(notes) or None)


def _conditions_run(run: ReportRun) -> list[Condition]:
    """The grid's conditions that have at least one cell."""
    return [c for c in run.conditions
            if any(run.results.cell(c.key(v)) for v in run.variants)]
