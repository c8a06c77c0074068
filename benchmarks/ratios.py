"""Compare the newest saved micro-benchmark run with the previous one; exit 1 on a slowdown.

``make microbench`` saves every run (pytest-benchmark ``--benchmark-autosave``, under
``.benchmarks/<machine>/``). Two comparisons, each failing above ``--threshold`` (25%):
- on the same machine: each benchmark's median against its median in the previous run;
- on any machine (CI runners change): each median divided by the median of a pure-CPU
  reference measured in the same run (token create+verify), against the same ratio before.
Benchmarks bound by wall-clock time (injected SMTP delays, polling) are left out: dividing
them by CPU speed means nothing, and they assert their own targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REFERENCE = "test_token_create_and_verify"
WALL_CLOCK_BOUND = ("test_dispatch[sync]", "test_dispatch[threaded]", "test_pickup_after_idle",
                    "test_eom_latency_holds", "test_long_poll_wakeup", "test_ingest_")


def medians(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text())
    return {b["name"]: b["stats"]["median"] for b in data["benchmarks"]
            if not b["name"].startswith(WALL_CLOCK_BOUND)}


def saved_runs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.json"), key=lambda p: p.stat().st_mtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(".benchmarks"))
    parser.add_argument("--threshold", type=float, default=0.25)
    args = parser.parse_args(argv)
    runs = saved_runs(args.root)
    if not runs:
        print(f"no saved micro-benchmark runs under {args.root}", file=sys.stderr)
        return 2
    if len(runs) == 1:
        print(f"first saved run ({runs[0]}); the next `make microbench` compares with it")
        return 0
    before_path, now_path = runs[-2], runs[-1]
    before, now = medians(before_path), medians(now_path)
    same_machine = before_path.parent == now_path.parent
    failures = []
    print(f"comparing {now_path.name} with {before_path.name}"
          f" ({'same machine' if same_machine else 'different machines: ratios only'})")
    print(f"{'benchmark':<55} {'median now':>12} {'before':>12} {'abs':>8} {'ratio':>8}")
    for name in sorted(now.keys() & before.keys()):
        absolute = now[name] / before[name] - 1
        ratio = (now[name] / now[REFERENCE]) / (before[name] / before[REFERENCE]) - 1 \
            if REFERENCE in now and REFERENCE in before else 0.0
        slower = [f"median {absolute:+.0%}"] if same_machine and absolute > args.threshold else []
        if name != REFERENCE and ratio > args.threshold:
            slower.append(f"ratio to {REFERENCE} {ratio:+.0%}")
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
