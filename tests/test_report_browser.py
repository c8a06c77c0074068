"""The report in a real browser: headless Chromium loads it from disk with no console error,
every image decoded and no other host reachable. Skipped where Chromium is not installed
(``apt-get install -y chromium``)."""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from reports import build_report
from tests.test_report import FIXTURES, write_samples

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Any request to another host fails, so a stray external reference shows as an error.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr", "--log-level=0",  # console messages go to stderr as :CONSOLE
    "--virtual-time-budget=10000",  # dump the DOM only once the page has settled
)
# Injected into a copy of the page: records script errors and failed loads, then on "load"
# writes how many images decoded into the DOM, which --dump-dom prints.
PROBE = """<script>
window.__problems = [];
window.addEventListener("error", (e) => window.__problems.push(
  e.message || ("failed to load " + (e.target && (e.target.src || e.target.href)))), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const out = document.createElement("pre");
  out.id = "maillab-probe";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt),
    problems: window.__problems,
  });
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class Rendered:
    images: int
    broken: list[str]
    problems: list[str]
    console: list[str]


def chromium() -> str:
    """The Chromium binary, or skip the test with how to install it."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        pytest.skip("Chromium is not installed (as root: apt-get install -y chromium)")
    return found


def open_in_chromium(report: Path, workdir: Path) -> Rendered:
    """Load a probed copy of ``report`` (same folder, so relative links resolve) in headless
    Chromium with a fresh profile; return what the probe and the console saw."""
    binary = chromium()
    page = report.with_name(f"probe-{report.name}")
    page.write_text(report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1),
                    encoding="utf-8")
    profile = workdir / "chromium-profile"
    profile.mkdir(exist_ok=True)
    process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "--dump-dom", page.as_uri()], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        page.unlink()
    found = re.search(r'<pre id="maillab-probe">(.*?)</pre>', out, re.DOTALL)
    assert found, f"Chromium printed no probe (exit {process.returncode}): {err[-2000:]}"
    probe = json.loads(htmllib.unescape(found.group(1)))
    console = [line for line in err.splitlines() if ":CONSOLE" in line]
    return Rendered(probe["images"], probe["broken"], probe["problems"], console)


def assert_renders_cleanly(report: Path, workdir: Path) -> None:
    expected = report.read_text(encoding="utf-8").count("<img ")
    rendered = open_in_chromium(report, workdir)
    assert rendered.problems == [] and rendered.console == []
    assert rendered.broken == []
    assert rendered.images == expected > 0


def test_probe_sees_broken_images_and_errors(tmp_path: Path) -> None:
    """The check itself: a page with a missing image, a remote one and a script error."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><head><title>x</title></head><body>'
                    '<img src="missing.png" alt="missing"><img src="https://example.com/a.png"'
                    ' alt="remote"><script>console.error("boom")</script></body></html>')
    rendered = open_in_chromium(page, tmp_path)
    assert sorted(rendered.broken) == ["missing", "remote"]
    assert len(rendered.problems) == 2
    assert any("boom" in line for line in rendered.console)


def test_fixture_report_renders_in_chromium(tmp_path: Path) -> None:
    chromium()
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "partial_run", run_dir)
    for index, cell in enumerate(json.loads((run_dir / "results.json").read_text())["cells"]):
        write_samples(run_dir, cell, seed=index)
    assert_renders_cleanly(build_report(run_dir), tmp_path)
