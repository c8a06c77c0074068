"""Compare the newest saved micro-benchmark run with the ones before; exit 1 on a slowdown.

``make microbench`` saves every run (pytest-benchmark ``--benchmark-autosave``, under
``.benchmarks/<machine>/``). "Before" is the median over the last ``--window`` (3) saved runs:
against one run alone, a benchmark whose run-to-run spread is wide (queued's dispatch, a
SQLite commit: medians of 235 to 307 us in five runs on one quiet machine) fails on noise. Two
comparisons, each failing above ``--threshold`` (25%):
- on the same machine (every run compared with is from it): each benchmark's median against
  its median before;
- on any machine (CI runners change): each median divided by the median of a pure-CPU
  reference measured in the same run (token create+verify), against the same ratio before.
A slowdown counts only when the benchmark's minimum moved too: the median measures what the
machine did while the benchmark ran, and a neighbour's burst on a shared 2-core machine moved
one benchmark's median by +50 to +60% in a run (email composition 25.6 -> 40.3 us,
baseline's dispatch 8.1 -> 13.2 us) while its minimum stayed within 4%. A slower code path
moves both. Benchmarks bound by wall-clock time (injected SMTP delays, polling) are left out:
dividing them by CPU speed means nothing, and they assert their own targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REFERENCE = "test_token_create_and_verify"
WALL_CLOCK_BOUND = ("test_dispatch[sync]", "test_dispatch[threaded]", "test_pickup_after_idle",
                    "test_eom_latency_holds", "test_long_poll_wakeup", "test_ingest_")


def medians(path: Path, stat: str = "median") -> dict[str, float]:
    """``stat`` (the median, or the minimum: ``min``) of each CPU-bound benchmark of a run."""
    data = json.loads(path.read_text())
    return {b["name"]: b["stats"][stat] for b in data["benchmarks"]
            if not b["name"].startswith(WALL_CLOCK_BOUND)}


def saved_runs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.json"), key=lambda p: p.stat().st_mtime)


def _median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per benchmark, the median of its values over ``runs`` (where it was measured)."""
    names = {name for run in runs for name in run}
    return {name: statistics.median(run[name] for run in runs if name in run)
            for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(".benchmarks"))
    parser.add_argument("--threshold", type=float, default=0.25)
    parser.add_argument("--window", type=int, default=3,
                        help="saved runs before the newest whose medians make 'before'")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be at least 1")
    runs = saved_runs(args.root)
    if not runs:
        print(f"no saved micro-benchmark runs under {args.root}", file=sys.stderr)
        return 2
    if len(runs) == 1:
        print(f"first saved run ({runs[0]}); the next `make microbench` compares with it")
        return 0
    now_path, before_paths = runs[-1], runs[-1 - args.window:-1]
    now = medians(now_path)
    earlier = [medians(path) for path in before_paths]
    before = _median_of(earlier)
    fastest_now = medians(now_path, "min")
    fastest_before = _median_of([medians(path, "min") for path in before_paths])
    ratios_before = _median_of([{name: value / run[REFERENCE] for name, value in run.items()}
                                for run in earlier if REFERENCE in run])
    same_machine = all(path.parent == now_path.parent for path in before_paths)
    failures = []
    print(f"comparing {now_path.name} with the median of {len(before_paths)} run(s) before it "
          f"({before_paths[0].name} to {before_paths[-1].name}; "
          f"{'same machine' if same_machine else 'different machines: ratios only'})")
    print(f"{'benchmark':<55} {'median now':>12} {'before':>12} {'abs':>8} {'ratio':>8}")
    for name in sorted(now.keys() & before.keys()):
        absolute = now[name] / before[name] - 1
        ratio = (now[name] / now[REFERENCE]) / ratios_before[name] - 1 \
            if REFERENCE in now and name in ratios_before else 0.0
        fastest = fastest_now[name] / fastest_before[name] - 1
        slower = [f"median {absolute:+.0%}"] if same_machine and absolute > args.threshold else []
        if name != REFERENCE and ratio > args.threshold:
            slower.append(f"ratio to {REFERENCE} {ratio:+.0%}")
        if slower and same_machine and fastest <= args.threshold:
            flag = f"  (noise: its minimum moved {fastest:+.0%})"
            slower = []
        else:
            flag = f"  SLOWER: {', '.join(slower)}" if slower else ""
        print(f"{name:<55} {now[name] * 1e6:>10.1f}us {before[name] * 1e6:>10.1f}us "
              f"{absolute:>+8.0%} {ratio:>+8.0%}{flag}")
        if slower:
            failures.append(name)
    if failures:
        print(f"{len(failures)} benchmark(s) slower than +{args.threshold:.0%}: "
              f"{', '.join(failures)}")
        return 1
    print(f"no benchmark slower than +{args.threshold:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
