"""The report in a real browser: headless Chromium (driven by Playwright, as the browser probe
is) loads it from disk with no console error, every image decoded and no other host reached.
Skipped, with the reason, where Playwright or Chromium is missing."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maillab.probe import launch_chromium
from reports import build_report
from tests.conftest import chromium_or_skip
from tests.test_report import FIXTURES, write_samples

IMAGES = """() => {
  const images = [...document.images];
  return {images: images.length,
          broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt)};
}"""


@dataclass(frozen=True)
class Rendered:
    images: int
    broken: list[str]
    problems: list[str]  # script errors and failed loads
    console: list[str]  # console errors and warnings


def open_in_chromium(page_path: Path) -> Rendered:
    """Load ``page_path`` in a fresh context where any request off the disk fails, so a stray
    external reference shows as a failed load; return what the page and the console said."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    console: list[str] = []

    def only_files(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context()
            context.route("**/*", only_files)
            page = context.new_page()
            page.on("console", lambda m: console.append(m.text)
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}"))
            page.goto(page_path.as_uri(), wait_until="load")
            state = page.evaluate(IMAGES)
        finally:
            browser.close()
    return Rendered(state["images"], state["broken"], problems, console)


def assert_renders_cleanly(report: Path) -> None:
    expected = report.read_text(encoding="utf-8").count("<img ")
    rendered = open_in_chromium(report)
    assert rendered.problems == [] and rendered.console == []
    assert rendered.broken == []
    assert rendered.images == expected > 0


def test_the_check_sees_broken_images_and_errors(tmp_path: Path) -> None:
    """The check itself: a page with a missing image, a remote one and a console error."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><head><title>x</title></head><body>'
                    '<img src="missing.png" alt="missing"><img src="https://example.com/a.png"'
                    ' alt="remote"><script>console.error("boom")</script></body></html>')
    rendered = open_in_chromium(page)
    assert sorted(rendered.broken) == ["missing", "remote"]
    assert len(rendered.problems) == 2
    assert any("boom" in line for line in rendered.console)


def test_fixture_report_renders_in_chromium(tmp_path: Path) -> None:
    chromium_or_skip()
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "partial_run", run_dir)
    for index, cell in enumerate(json.loads((run_dir / "results.json").read_text())["cells"]):
        write_samples(run_dir, cell, seed=index)
    assert_renders_cleanly(build_report(run_dir))
