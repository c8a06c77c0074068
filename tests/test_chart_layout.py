"""Charts stay readable at the size the report shows them: no two tick labels overlap, and no
note written on a chart covers its data.

Each chart is drawn from a run and measured with matplotlib itself, at the figure's own 100 px
per inch (report.html shows a chart at that size, or smaller when it is wider than the page):
tick labels by their window extents; notes against the display-space geometry of the lines,
markers, bars, fills and dots that they could hide.

The runs: the two in tests/report_fixtures (the hand-built stopped run, the real v1 run), and
runs built here through the results model with what crowds a chart: a capacity run's close
steps (10, 12, 14, 15, 16 sign-ups/s among 4 to 48) whose sync series broke at 18/s, many SMTP
latencies in a run stopped before its last cells, and the quick profile's fault scenarios.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest
from pydantic import TypeAdapter

from loadtests.cellfiles import CellKey, Sample, grid
from loadtests.results import Capacity, CellResult, Environment, Results, Server, write_results
from loadtests.stats import inp_rating
from reports import charts, sample_charts
from reports.build import CHARTS
from reports.data import ReportRun, load_report_run
from reports.figures import Chart
from tests.runs import record_cell
from tests.test_report import FIXTURES, copy_partial_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

VARIANTS = ("baseline", "sync", "threaded", "queued", "outbox")
CLOSE_RATES = [4.0, 8.0, 10.0, 12.0, 14.0, 15.0, 16.0, 18.0, 20.0, 24.0, 32.0, 48.0]
SYNC_KNEE, SYNC_BREAK = 16.0, 18.0  # 1 worker x 8 threads / 0.5 s SMTP, as capacity.toml says
MANY_LATENCIES = [0, 50, 100, 200, 500, 1000, 2000, 5000]
QUICK_SCENARIOS = ("clean", "smtp-flaky", "app-crash", "consumer-crash")
PAGE_PX = 1232  # report.html: max-width 1280 px less 1.5rem of padding either side
DRAW = {draw.__name__: draw for draw in CHARTS}


# -- runs built through the results model -------------------------------------------------------

def _stats(p50: float, count: int, rate: float) -> dict[str, float]:
    return {"count": count, "failures": 0, "rps": rate, "p50_ms": p50, "p75_ms": p50 * 1.1,
            "p95_ms": p50 * 1.4, "p99_ms": p50 * 1.8, "max_ms": p50 * 2.5}


def _cell(key: CellKey) -> CellResult:
    """A cell that looks like a measured one, checked by the model as a stored one is: sync
    waits for SMTP and queues past its knee, the others answer in a few ms; a fault scenario
    loses threaded two emails."""
    rate, sends = key.load.rate, key.variant != "baseline"
    register = {"baseline": 5.0, "threaded": 6.5, "queued": 7.0, "outbox": 8.5}.get(
        key.variant, (key.latency_ms + 5.0) * max(1.0, rate / SYNC_KNEE) ** 4)
    count = int(rate * 10)
    lost = 2 if key.scenario != "clean" and key.variant == "threaded" else 0
    inbox = key.latency_ms + (48.0 if key.variant in ("queued", "outbox") else 8.0)
    wait = register * 1.1 + 16.7
    return TypeAdapter(CellResult).validate_python({
        "variant": key.variant, "smtp_latency_ms": key.latency_ms, "users": 64, "mode": "open",
        "rate": rate, "scenario": key.scenario, "duration_s": 10.0, "warmup_s": 1.0,
        "register": _stats(register, count, rate), "verify": _stats(3.0, count, rate),
        "inp_proxy": {"p75_ms": wait, "rating": inp_rating(wait), "render_allowance_ms": 16.7},
        "time_to_inbox": {"count": count - lost if sends else 0,
                          "p50_ms": inbox if sends else None,
                          "p95_ms": inbox * 1.3 if sends else None,
                          "p99_ms": inbox * 1.6 if sends else None},
        "throughput_rps": min(rate, SYNC_KNEE) if key.variant == "sync" else rate,
        "delivery": {"registered": count, "delivered": count - lost if sends else 0,
                     "missing": lost, "duplicates": 0, "verified": count, "expected": sends},
        # The model's null queue depth: the variant has no queue.
        "resources": {"peak_threads": 10 + (round(rate * key.latency_ms / 1000)
                                            if key.variant == "threaded" else 0),
                      "peak_queue_depth": round(rate / 2) if key.variant == "queued" else None},
        "files": key.folder, "valid": True, "warnings": []})


def _samples(cell: CellResult, seed: int) -> list[Sample]:
    """Register and time-to-inbox samples around the cell's medians, the first second warm-up."""
    rng = random.Random(seed)
    rate = cell.load.rate
    rows = []
    for i in range(int(rate * 6)):
        start = 1_800_000_000.0 + i / rate
        register = (cell.register.p50_ms or 0.0) * rng.uniform(0.8, 1.5)
        rows.append(Sample("register", "POST", start, register, ok=True, warmup=i < rate))
        if cell.sends_email:
            inbox = cell.time_to_inbox.p50_ms or 0.0
            rows.append(Sample("time_to_inbox", "EMAIL", start, inbox * rng.uniform(0.9, 1.3),
                               ok=True, warmup=i < rate))
    return rows


def build_run(run_dir: Path, latencies: list[int], rates: list[float], *,
              scenarios: tuple[str, ...] = ("clean",), scenario_latencies: tuple[int, ...] = (),
              not_run: int = 0, capacity: bool = False) -> ReportRun:
    """A run of the profile grid (:func:`loadtests.cellfiles.grid`) written by the product's
    own writer and read back by the report's loader; samples kept at the run's focus load.
    ``not_run``: stopped before its last cells; ``capacity``: sync's steps past its break were
    skipped, as the capacity runner skips them."""
    keys = grid(VARIANTS, latencies, rates=rates, scenarios=scenarios,
                scenario_latencies_ms=scenario_latencies)
    keys = keys[:len(keys) - not_run]
    skipped = [r for r in rates if r > SYNC_BREAK] if capacity else []
    cells = [_cell(k) for k in keys if not (k.variant == "sync" and k.load.rate in skipped)]
    results = Results(
        run_id=run_dir.name, profile="capacity" if capacity else "test",
        profile_settings={"variants": list(VARIANTS), "latencies_ms": latencies, "rates": rates,
                          "mode": "open", "scenarios": list(scenarios),
                          "scenario_latencies_ms": list(scenario_latencies)},
        started_at="2026-01-02T03:04:05+0000", finished_at="2026-01-02T03:14:05+0000",
        complete=not not_run, stopped_reason="stopped by SIGINT" if not_run else None,
        environment=Environment(python="3.11", platform="test", cpu_count=2, git_sha=None,
                                packages={}, server=Server(workers=1, threads=8),
                                password_hash="pbkdf2:sha256:1000"),
        cells=cells,
        capacity=[TypeAdapter(Capacity).validate_python(
            {"variant": "sync", "smtp_latency_ms": lat, "slo": "register p99 <= 1 s",
             "knee_rps": SYNC_KNEE, "broke_at_rps": SYNC_BREAK, "ended_by": "register SLO",
             "skipped_rates": skipped}) for lat in latencies] if capacity else [])
    run_dir.mkdir(parents=True)
    write_results(run_dir, results)
    run = load_report_run(run_dir)
    for index, cell in enumerate(run.cells):
        if cell.load == run.focus_load:
            record_cell(run_dir, cell.key, _samples(cell, index))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportRun]:
    root = tmp_path_factory.mktemp("runs")
    partial = copy_partial_run(root / "partial")
    shutil.copytree(FIXTURES / "v1_run", root / "v1")
    return {
        "partial": load_report_run(partial),
        "v1": load_report_run(root / "v1"),
        "close_rates": build_run(root / "close_rates", [500], CLOSE_RATES, capacity=True),
        "many_latencies": build_run(root / "many_latencies", MANY_LATENCIES, [10.0],
                                    not_run=2),
        "quick": build_run(root / "quick", [0, 500, 5000], [10.0], scenarios=QUICK_SCENARIOS,
                           scenario_latencies=(500,)),
    }


@pytest.fixture(scope="module")
def drawn(runs: dict[str, ReportRun], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Callable[[str, str], tuple[Figure, Chart]]]:
    """Draw a chart of a run as the report does, but keep its figure instead of writing PNG
    and SVG; each is drawn once for every check on it."""
    out_dir = tmp_path_factory.mktemp("charts")
    kept: dict[tuple[str, str], tuple[Figure, Chart]] = {}
    figures: list[Figure] = []

    def keep(fig: Figure, out_dir: Path, name: str, title: str, how: str,
             note: str | None = None) -> Chart:
        figures.append(fig)
        return Chart(name, title, how, note=note, width_px=round(fig.get_figwidth() * 100))

    def draw(run_name: str, chart: str) -> tuple[Figure, Chart]:
        if (run_name, chart) not in kept:
            drawn_chart = DRAW[chart](runs[run_name], out_dir)
            assert figures, f"{chart} drew nothing: {drawn_chart.note}"
            fig = figures.pop()
            fig.draw_without_rendering()
            kept[run_name, chart] = fig, drawn_chart
        return kept[run_name, chart]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(charts, "save", keep)
        patch.setattr(sample_charts, "save", keep)
        yield draw


# -- what the checks measure --------------------------------------------------------------------

def _renderer(fig: Figure) -> RendererBase:
    return fig.canvas.get_renderer()  # type: ignore[attr-defined]


def _overlap(a: Bbox, b: Bbox, touch: float = 0.0) -> bool:
    """Whether two boxes overlap, or come closer than ``touch`` pixels."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > -touch
            and min(a.y1, b.y1) - max(a.y0, b.y0) > -touch)


def _all_axes(fig: Figure) -> list[Axes]:
    """Every visible axes, with the ones drawn beside another (a secondary axis)."""
    found = [ax for ax in fig.axes if ax.get_visible()]
    return found + [cast("Axes", child) for ax in found for child in ax.child_axes]


def _shown_labels(axis: Axis) -> list[Text]:
    """The major tick labels matplotlib draws: with text, visible, their tick in view."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(low), abs(high), 1.0)
    locs = axis.get_majorticklocs()
    return [label for tick, loc in zip(axis.get_major_ticks(len(locs)), locs, strict=True)
            if low - slack <= loc <= high + slack
            for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text()]


def _notes(fig: Figure) -> list[Text]:
    """Text placed by the frame of the axes or the figure, not at a data point: notes on what
    a panel lacks, names of background bands. Labels of a bar or a point are not notes."""
    from matplotlib.text import Annotation

    titles = {fig.get_suptitle(), fig.get_supxlabel(), fig.get_supylabel()}
    found = [text for text in fig.texts if text.get_text() not in titles]
    for ax in _all_axes(fig):
        for text in ax.texts:
            placed_by_data = (text.xycoords == "data" if isinstance(text, Annotation)
                              else text.get_transform() is ax.transData)
            if text.get_visible() and text.get_text() and not placed_by_data:
                found.append(text)
    return found


def _points(fig: Figure, size_pt: float) -> float:
    return size_pt * fig.dpi / 72


def _covers_line(fig: Figure, line: Any, region: Bbox) -> bool:
    from matplotlib.cbook import STEP_LOOKUP_MAP
    from matplotlib.path import Path as MplPath

    xy = np.asarray(line.get_xydata(), dtype=float)
    if not len(xy):
        return False
    if line.get_linestyle() not in ("None", "", " "):
        drawn_xy = np.column_stack(STEP_LOOKUP_MAP[line.get_drawstyle()](xy[:, 0], xy[:, 1]))
        display = line.get_transform().transform(drawn_xy)
        reach = region.padded(_points(fig, line.get_linewidth()) / 2)
        finite = np.isfinite(display).all(axis=1)
        # A NaN breaks the line: each unbroken run is a path of its own.
        for run in np.split(display, np.flatnonzero(~finite)):
            run = run[np.isfinite(run).all(axis=1)]
            if len(run) > 1 and MplPath(run).intersects_bbox(reach, filled=False):
                return True
            if len(run) == 1 and reach.contains(*run[0]):
                return True
    if line.get_marker() not in (None, "", "None", " "):
        reach = region.padded(_points(fig, line.get_markersize()) / 2)
        display = line.get_transform().transform(xy)
        return any(reach.contains(x, y) for x, y in display if np.isfinite([x, y]).all())
    return False


def _covered(fig: Figure, ax: Axes, region: Bbox) -> list[str]:
    """The data of ``ax`` inside ``region`` (display pixels): lines and their markers, bars,
    fills and scatter dots; background spans (rating bands, warm-up) are not data."""
    from matplotlib.collections import PathCollection, PolyCollection

    hit = [f"line {line.get_label()!r}" for line in ax.lines
           if line.get_visible() and _covers_line(fig, line, region)]
    for container in ax.containers:
        hit += [f"bar {container.get_label()!r}" for patch in container
                if patch.get_visible() and _overlap(patch.get_window_extent(_renderer(fig)),
                                                    region)]
    for collection in ax.collections:
        if isinstance(collection, PathCollection):
            reach = region.padded(_points(fig, float(np.sqrt(max(collection.get_sizes(),
                                                                default=1.0)))) / 2)
            offsets = collection.get_offset_transform().transform(collection.get_offsets())
            if any(reach.contains(x, y) for x, y in offsets if np.isfinite([x, y]).all()):
                hit.append(f"dots {collection.get_label()!r}")
        elif isinstance(collection, PolyCollection):
            paths = [collection.get_transform().transform_path(p)
                     for p in collection.get_paths()]
            if any(p.intersects_bbox(region, filled=True) for p in paths):
                hit.append(f"fill {collection.get_label()!r}")
    return hit


def _frame_text(fig: Figure) -> list[tuple[str, Bbox]]:
    """What frames the data, with its extent: tick and axis labels, titles, legends."""
    renderer = _renderer(fig)
    titles = {fig.get_suptitle(), fig.get_supxlabel(), fig.get_supylabel()}
    texts = [text for text in fig.texts if text.get_text() in titles]
    legends = list(fig.legends)
    for ax in _all_axes(fig):
        texts += [*_shown_labels(ax.xaxis), *_shown_labels(ax.yaxis), ax.xaxis.label,
                  ax.yaxis.label, ax.title]
        if (legend := ax.get_legend()) is not None:
            legends.append(legend)
    return ([(t.get_text(), t.get_window_extent(renderer)) for t in texts
             if t.get_visible() and t.get_text()]
            + [("legend", legend.get_window_extent(renderer)) for legend in legends])


def _other_text(fig: Figure, notes: list[Text]) -> list[tuple[str, Bbox]]:
    """Everything else written on the figure that a note could sit on: the frame's text and
    the labels of bars and points."""
    renderer = _renderer(fig)
    labels = [text for ax in _all_axes(fig) for text in ax.texts
              if text not in notes and text.get_visible() and text.get_text()]
    return _frame_text(fig) + [(t.get_text(), t.get_window_extent(renderer)) for t in labels]


# -- the checks ---------------------------------------------------------------------------------

# The charts drawn from each run (drawing is the slow part, so each run draws what it tests):
# the fixtures every chart they have but the hand-built run's over-time grid (16 panels, its
# notes in panels that have no data); the capacity run the charts with a rate axis or one bar
# or point per step; many latencies the charts with a latency axis and the resources' long
# axis labels; the quick profile's scenarios the charts labelled by condition, and the rating
# bands at 5 s SMTP.
DRAWN = {
    "partial": ("register_vs_latency", "inp_proxy_bands", "inbox_cdf", "throughput_vs_load",
                "latency_vs_load", "delivery", "resources"),
    "v1": ("register_vs_latency", "inp_proxy_bands", "inbox_cdf", "response_over_time",
           "delivery", "resources"),
    "close_rates": ("throughput_vs_load", "latency_vs_load", "delivery", "resources"),
    "many_latencies": ("register_vs_latency", "inp_proxy_bands", "inbox_cdf", "resources"),
    "quick": ("inp_proxy_bands", "delivery", "resources"),
}
CASES = [(run, chart) for run, names in DRAWN.items() for chart in names]
# Pairs where the run gives the chart something to say in a note: they must have one.
NOTED = {("partial", "latency_vs_load"), ("partial", "throughput_vs_load"),
         ("partial", "resources"), ("partial", "inbox_cdf"),
         ("v1", "inbox_cdf"), ("v1", "resources"), ("close_rates", "latency_vs_load"),
         ("close_rates", "throughput_vs_load"), ("close_rates", "resources"),
         ("many_latencies", "register_vs_latency"), ("many_latencies", "inbox_cdf"),
         ("quick", "resources")}


@pytest.mark.parametrize(("run_name", "chart"), CASES)
def test_tick_labels_do_not_overlap(run_name: str, chart: str,
                                    drawn: Callable[[str, str], tuple[Figure, Chart]]) -> None:
    fig, _ = drawn(run_name, chart)
    renderer = _renderer(fig)
    for ax in _all_axes(fig):
        for axis in (ax.xaxis, ax.yaxis):
            labels = _shown_labels(axis)
            boxes = [label.get_window_extent(renderer) for label in labels]
            clashes = [(labels[i].get_text(), labels[j].get_text())
                       for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                       if _overlap(boxes[i], boxes[j], touch=1.0)]
            assert not clashes, f"{ax.get_title()!r}, {axis.axis_name} axis: {clashes}"
    # Nor do they, the axis labels, titles and legends run into one another across panels.
    frame = _frame_text(fig)
    clashes = [(a, b) for i, (a, box_a) in enumerate(frame) for b, box_b in frame[i + 1:]
               if _overlap(box_a, box_b)]
    assert not clashes, clashes


@pytest.mark.parametrize(("run_name", "chart"), CASES)
def test_notes_cover_no_data_and_no_other_text(
        run_name: str, chart: str, drawn: Callable[[str, str], tuple[Figure, Chart]]) -> None:
    fig, _ = drawn(run_name, chart)
    renderer = _renderer(fig)
    notes = _notes(fig)
    if (run_name, chart) in NOTED:
        assert notes, "the run lacks something this chart should name in a note"
    for note in notes:
        box = note.get_window_extent(renderer)
        patch = note.get_bbox_patch()
        if patch is not None:
            box = patch.get_window_extent(renderer)  # the note's white box hides what it covers
        for ax in _all_axes(fig):
            region = box.intersection(box, ax.bbox)  # data is clipped to its axes
            if region is not None and region.width > 0 and region.height > 0:
                covered = _covered(fig, ax, region)
                assert not covered, f"note {note.get_text()!r} covers {covered}"
        crowded = [text for text, extent in _other_text(fig, notes) if _overlap(box, extent)]
        assert not crowded, f"note {note.get_text()!r} sits on {crowded}"


def test_close_rates_keep_a_tick_at_every_step_and_label_the_ends(
        drawn: Callable[[str, str], tuple[Figure, Chart]]) -> None:
    """Fewer labels, not fewer ticks: every rate the run offered keeps its tick, labelled or
    not, and the first and the last rate are labelled."""
    fig, _ = drawn("close_rates", "latency_vs_load")
    ax = fig.axes[0]
    labelled = [label.get_text() for label in _shown_labels(ax.xaxis)]
    ticks = sorted([*ax.get_xticks(), *ax.get_xticks(minor=True)])
    assert labelled[0] == "4" and labelled[-1] == "48"
    assert all(any(np.isclose(rate, t) for t in ticks) for rate in CLOSE_RATES)


@pytest.mark.parametrize(("run_name", "chart"), [
    ("close_rates", "delivery"), ("close_rates", "resources"),
    ("many_latencies", "inp_proxy_bands")])
def test_a_chart_of_many_cells_fits_the_page(
        run_name: str, chart: str, drawn: Callable[[str, str], tuple[Figure, Chart]]) -> None:
    """One bar or point per cell: wider than the page, the report would shrink it until its
    labels could not be read."""
    _, drawn_chart = drawn(run_name, chart)
    assert drawn_chart.width_px <= PAGE_PX
