"""Watching a cell while it runs: the app's live threads and CPU, the queue's depth, locust's
CPU and memory (every load process: the master and, distributed, its workers).

Threads are counted from /proc over every gunicorn worker (a scrape of /metrics would see only
the one worker that answered, and would load the server being measured). Queue depth comes
from the queue consumer's own /metrics, and only where there is a queue.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The pids ``pid`` forked, from the kernel's per-thread children lists."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in children.read_text().split())
        except OSError:  # the process or thread just exited
            continue
    return found


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (statm's second field, in pages)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def scraped(metrics_url: str, family_name: str) -> int | None:
    """The sum of one family's samples at ``metrics_url``; None if it cannot be read."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return int(sum(sample.value for sample in family.samples
                           if not sample.name.endswith("_created")))
    return None


def queue_depth(metrics_url: str, metric: str = "maillab_queue_depth") -> int | None:
    return scraped(metrics_url, metric)


@dataclass
class CellSampler:
    """Samples every ``interval`` seconds in a thread between ``start()`` and ``stop()``."""

    server_pid: int | None  # None: an app the lab did not start (its threads and CPU unread)
    queue_metrics_url: str | None = None  # None: the variant has no queue
    consumer_pids: list[int] = field(default_factory=list)  # the variant's consumers
    queue_metric: str = "maillab_queue_depth"  # the gauge at queue_metrics_url
    interval: float = 0.25
    peak_threads: int = 0
    app_cpu_first: dict[int, float] = field(default_factory=dict)  # per process, under load
    app_cpu_last: dict[int, float] = field(default_factory=dict)
    app_started: float = 0.0
    app_ended: float = 0.0
    app_done: bool = False  # set when the load ends: the drain after it is not the load's
    peak_queue_depth: int | None = None
    load_pid: int | None = None
    load_cpu_s: dict[int, float] = field(default_factory=dict)  # per load process, last seen
    load_started: float = 0.0
    load_ended: float = 0.0
    # (seconds since the load started, MiB resident over every load process, how many
    # processes were read), once a second.
    load_rss: list[tuple[float, float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.app_started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="cell-sampler", daemon=True)
        self._thread.start()

    def watch_load(self, pid: int) -> None:
        self.load_pid, self.load_started = pid, time.monotonic()
        self.app_cpu_first.clear()
        self.app_cpu_last.clear()
        self.app_started = self.load_started

    def load_ended_now(self) -> None:
        """Stop counting the app's CPU: the load is over."""
        self.app_done = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def load_cpu_percent(self) -> float | None:
        """The busiest load process's CPU in % of one core: each is one gevent loop, so one
        past saturation measures itself whatever the others do."""
        wall = self.load_ended - self.load_started
        if wall <= 0 or not self.load_cpu_s:
            return None
        return round(100 * max(self.load_cpu_s.values()) / wall, 1)

    @property
    def load_processes(self) -> int:
        return len(self.load_cpu_s)

    @property
    def app_cpu_percent(self) -> float | None:
        """CPU the app's processes (gunicorn's workers, the consumer) used over the cell, in %
        of one core; a worker that exited counts its last reading."""
        wall = self.app_ended - self.app_started
        if wall <= 0 or not self.app_cpu_last:
            return None
        used = sum(last - self.app_cpu_first[pid] for pid, last in self.app_cpu_last.items())
        return round(100 * used / wall, 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            server = [] if self.server_pid is None else [self.server_pid]
            workers = [w for pid in server for w in children_of(pid)]
            threads = sum(thread_count(pid) for pid in workers)
            self.peak_threads = max(self.peak_threads, threads)
            if not self.app_done:
                for pid in [*server, *workers, *self.consumer_pids]:
                    used = cpu_seconds(pid)
                    if used is not None:
                        self.app_cpu_first.setdefault(pid, used)
                        self.app_cpu_last[pid] = used
                self.app_ended = time.monotonic()
            depth = (queue_depth(self.queue_metrics_url, self.queue_metric)
                     if self.queue_metrics_url else None)
            if depth is not None:
                self.peak_queue_depth = max(self.peak_queue_depth or 0, depth)
            if self.load_pid is not None:
                self._sample_load(self.load_pid)
            self._stop.wait(self.interval)

    def _sample_load(self, master: int) -> None:
        resident, read = 0, 0
        for pid in [master, *children_of(master)]:
            used = cpu_seconds(pid)
            if used is not None:  # the last reading before a process exits is kept
                self.load_cpu_s[pid], self.load_ended = used, time.monotonic()
                found = rss_bytes(pid)
                if found:
                    resident, read = resident + found, read + 1
        since = time.monotonic() - self.load_started
        if resident and (not self.load_rss or since - self.load_rss[-1][0] >= 1.0):
            self.load_rss.append((round(since, 1), round(resident / 2**20, 1), read))
