"""What the person sees: sign-ups in real headless Chromium, timed by the browser itself.

Playwright drives Debian's ``chromium`` (``executable_path``: browser downloads are not
possible here). For each sign-up the probe opens the sign-up form (maillab's ``/register``,
or a target's first step), types into the fields the target posts (an address and a password)
and clicks the form's button: a trusted click, as a person's is (``event.isTrusted`` is
recorded to prove it). Scripts injected into every document report, through a binding:

- the click, from a capture-phase listener (its epoch time: ``timeOrigin + timeStamp``);
- the click's Event Timing entries (``durationThreshold`` 16 ms, the smallest allowed): what
  INP is built from. None reported means the interaction took under 16 ms: Event Timing ends
  at the next paint after the handlers, and the old page keeps painting while the POST waits;
- the next page's first contentful paint (maillab's ``/register/sent``; a target's page after
  its post), and its navigation's ``responseEnd``.

Times from two documents are compared as epoch milliseconds (``performance.timeOrigin`` plus
the entry's time), one clock for both. Click to confirmation painted is what the person
waits; the lab's INP proxy (response time including the redirect, plus a render allowance)
is computed here for the same sign-up, from the browser's own ``responseEnd``.

Written here rather than taken from a library: no well-kept package measures a form POST's
click-to-next-page paint; Playwright gives the trusted input and the page, the browser gives
the entries, this module only pairs them.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtests.cellfiles import BROWSER_FILE
from loadtests.results import Browser
from loadtests.stats import percentile

CHROMIUM_ENV = "MAILLAB_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
EVENT_THRESHOLD_MS = 16  # the smallest durationThreshold Event Timing allows
RENDER_ALLOWANCE_MS = 16.7  # the INP proxy's one frame at 60 Hz, as in the bench
PASSWORD = "correct horse battery staple"
FORM = 'form[action$="/register"]'
BUTTON = "button, input[type=submit]"

# Injected into every document before its own scripts (Playwright's add_init_script).
_INIT_SCRIPT = r"""
(() => {
  const send = (kind, data) => { try { window.__maillabProbe(kind, data); } catch (e) {} };
  document.addEventListener('click', (e) => {
    const button = e.target && e.target.closest && e.target.closest('__BUTTON__');
    if (button) send('click', {trusted: e.isTrusted, at: performance.timeOrigin + e.timeStamp});
  }, true);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!e.interactionId) continue;
      send('event', {name: e.name, interaction: e.interactionId, duration: e.duration,
                     processing: e.processingEnd - e.processingStart,
                     presentation: e.startTime + e.duration - e.processingEnd});
    }
  }).observe({type: 'event', durationThreshold: __THRESHOLD__, buffered: true});
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.name !== 'first-contentful-paint') continue;
      const nav = performance.getEntriesByType('navigation')[0];
      send('paint', {path: location.pathname, at: performance.timeOrigin + e.startTime,
                     response_end: nav ? performance.timeOrigin + nav.responseEnd : null});
    }
  }).observe({type: 'paint', buffered: true});
})();
""".replace("__THRESHOLD__", str(EVENT_THRESHOLD_MS))


def _init_script(form: str) -> str:
    """The injected script, its click listener on ``form``'s buttons."""
    buttons = ", ".join(f"{form} {b.strip()}" for b in BUTTON.split(","))
    return _INIT_SCRIPT.replace("__BUTTON__", buttons.replace("'", "\\'"))


@dataclass(frozen=True)
class SignUpForm:
    """Where the sign-up form is and what the person types into it: maillab's own by
    default, or a target's (:func:`form_of`)."""

    page: str = "/register"
    form: str = FORM  # a CSS selector of the form
    fields: tuple[tuple[str, str], ...] = (("email", "${email}"), ("password", "${password}"))
    password: str = PASSWORD
    address: str = "probe-${id}@maillab.test"
    confirmation: str | None = "/register/sent"  # the path painted after it; None: any page


def form_of(target: Any) -> SignUpForm:
    """The sign-up form of a target (loadtests.target.Target): the page of its first get
    step, the form holding the first field its post sends, the fields it types."""
    if target.built_in:
        return SignUpForm()
    post = target.signup[target.sign_up_step]
    page = next((s.get for s in target.signup[:target.sign_up_step] if s.get), post.path)
    typed = tuple((name, value) for name, value in (post.form or {}).items()
                  if "${email}" in value or "${password}" in value)
    if not typed:
        raise ProbeUnavailable(f"{target.source}: signup[{target.sign_up_step}] posts no form "
                               "field with ${email} or ${password} for a person to type")
    return SignUpForm(page=str(page), form=f'form:has([name="{typed[0][0]}"])', fields=typed,
                      password=target.password, address=target.email.address.replace(
                          "${id}", "probe-${id}"), confirmation=None)


class ProbeUnavailable(RuntimeError):
    """The browser probe cannot run here; the message says why (and the run goes on)."""


class ProbeFailed(RuntimeError):
    """A probe sign-up did not complete; the message says where it stopped."""


@dataclass(frozen=True)
class BrowserSignup:
    """One sign-up as the browser measured it (milliseconds)."""

    email: str
    trusted: bool
    click_to_confirmation_ms: float  # the click until the confirmation's first paint
    event_ms: float | None  # the click's Event Timing duration; None: under 16 ms
    processing_ms: float | None
    presentation_ms: float | None
    response_ms: float  # the click until the confirmation's last byte (responseEnd)
    render_ms: float  # the confirmation's last byte until its first contentful paint
    proxy_ms: float  # the lab's INP proxy: response_ms plus one frame


def summarize(signups: list[BrowserSignup]) -> Browser:
    """The cell's browser block (results.json) from its sign-ups. A click with no Event
    Timing entry counts as 16 ms, the threshold: an upper bound on what Chromium would say."""
    def p(values: list[float], q: float) -> float | None:
        found = percentile(sorted(values), q)
        return None if found is None else round(found, 1)

    confirm = [s.click_to_confirmation_ms for s in signups]
    events = [s.event_ms if s.event_ms is not None else float(EVENT_THRESHOLD_MS)
              for s in signups]
    return Browser(
        count=len(signups), trusted=sum(s.trusted for s in signups),
        click_to_confirmation_p50_ms=p(confirm, 50), click_to_confirmation_p75_ms=p(confirm, 75),
        click_to_confirmation_p95_ms=p(confirm, 95), event_p75_ms=p(events, 75),
        events_reported=sum(s.event_ms is not None for s in signups),
        proxy_p75_ms=p([s.proxy_ms for s in signups], 75),
        response_p75_ms=p([s.response_ms for s in signups], 75),
        render_p50_ms=p([s.render_ms for s in signups], 50))


def write_signups(folder: Path, signups: list[BrowserSignup]) -> Path:
    """Every sign-up the browser measured, one CSV row each (columns: the fields of
    :class:`BrowserSignup`), so the cell's browser block can be traced to its samples."""
    path = folder / BROWSER_FILE
    partial = path.with_suffix(".partial")
    with partial.open("w", newline="") as out:
        writer = csv.DictWriter(out, [f.name for f in fields(BrowserSignup)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in signups)
    partial.replace(path)
    return path


def check_url(url: str) -> str:
    """``url`` without a trailing slash; raises ValueError naming it unless it is an http(s)
    URL on a loopback address (the lab signs up accounts only on this machine)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"URL {url!r} is not an http:// or https:// address")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"URL {url!r}: the probe signs up accounts only on a loopback "
                         "address (127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def find_chromium() -> str:
    """The Chromium to drive: $MAILLAB_CHROMIUM, else the first on PATH; raises
    :class:`ProbeUnavailable` saying what is missing."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise ProbeUnavailable(f"{CHROMIUM_ENV}={given!r} is not an executable file")
        return given
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ProbeUnavailable("Chromium is not installed (make chromium, or apt-get install "
                           f"chromium; or set {CHROMIUM_ENV})")


def probe(url: str, count: int, form: SignUpForm | None = None, timeout_s: float = 60.0,
          spacing_s: float = 0.0,
          stop: threading.Event | None = None) -> list[BrowserSignup]:
    """``count`` sign-ups at ``url`` (a running variant), one fresh browser context each,
    started ``spacing_s`` apart (the bench spreads them over a cell's window) and left to run
    side by side, so a slow server does not stretch the series; ``stop`` starts no more and
    returns what finished."""
    base = check_url(url)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ProbeUnavailable("Playwright is not installed (pip install 'maillab[browser]')"
                               ) from None
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            return _series(browser, base, count, form or SignUpForm(), timeout_s, spacing_s,
                           stop, PlaywrightError)
        finally:
            browser.close()


@dataclass
class _Flight:
    """One sign-up under way: its own context, page, and what its documents reported."""

    email: str
    context: Any
    page: Any
    reports: list[tuple[str, dict[str, Any]]]
    deadline: float
    confirmation: str | None

    def painted(self) -> bool:
        return _click_and_paint(self.reports, self.confirmation) is not None


def _series(browser: Any, base: str, count: int, form: SignUpForm, timeout_s: float,
            spacing_s: float, stop: threading.Event | None,
            error: type[Exception]) -> list[BrowserSignup]:
    """Start each sign-up on time, collect each once its confirmation painted. Playwright's
    sync API delivers the pages' reports only while it is called, so waiting is done on a
    page in flight (``wait_for_timeout``)."""
    done: list[BrowserSignup] = []
    flying: list[_Flight] = []
    began, started = time.monotonic(), 0
    try:
        while started < count or flying:
            stopping = stop is not None and stop.is_set()
            due = began + started * spacing_s
            if started < count and not stopping and time.monotonic() >= due:
                email = form.address.replace("${id}", uuid.uuid4().hex[:12])
                flying.append(_start(browser, base, form, email, timeout_s, error))
                started += 1
                continue
            if stopping:
                count = started
            for flight in list(flying):
                if flight.painted():
                    done.append(_pair(flight.email, flight.reports, flight.confirmation))
                elif time.monotonic() > flight.deadline:
                    raise ProbeFailed(f"{flight.email}: the confirmation page never painted")
                else:
                    continue
                flying.remove(flight)
                flight.context.close()
            if flying:
                flying[0].page.wait_for_timeout(10)
            elif started < count:
                time.sleep(max(0.0, min(0.05, due - time.monotonic())))
    except error as exc:
        raise ProbeFailed(f"a probe sign-up failed: {str(exc).splitlines()[0]}") from None
    finally:
        for flight in flying:
            flight.context.close()
    return done


def _start(browser: Any, base: str, form: SignUpForm, email: str, timeout_s: float,
           error: type[Exception]) -> _Flight:
    reports: list[tuple[str, dict[str, Any]]] = []
    context = browser.new_context()
    try:
        context.expose_binding("__maillabProbe",
                               lambda _source, kind, data: reports.append((kind, data)))
        context.add_init_script(_init_script(form.form))
        page = context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.goto(f"{base}{form.page}")
        for name, value in form.fields:
            page.fill(f'{form.form} [name="{name}"]',
                      value.replace("${email}", email).replace("${password}", form.password))
        reports.clear()  # what the form page reported before the click is not this sign-up
        page.locator(form.form).locator(BUTTON).first.click()
    except error as exc:
        context.close()
        raise ProbeFailed(f"{email}: {str(exc).splitlines()[0]}") from None
    return _Flight(email, context, page, reports, time.monotonic() + timeout_s,
                   form.confirmation)


def launch_chromium(playwright: Any) -> Any:
    """The system's Chromium, headless, under Playwright; :class:`ProbeUnavailable` if it is
    missing or does not start. (Also how the report's browser test opens the report.)"""
    from playwright.sync_api import Error as PlaywrightError

    executable = find_chromium()
    try:
        return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    except PlaywrightError as exc:
        raise ProbeUnavailable(f"Chromium at {executable} did not start: "
                               f"{str(exc).splitlines()[0]}") from None


def _click_and_paint(reports: list[tuple[str, dict[str, Any]]], confirmation: str | None,
                     ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The click and the first paint after it of the page that confirms (its path ends with
    ``confirmation``; None: any page), or None while either is missing. The form page's own
    paint can be reported late, after the click: it is older than the click, so not taken."""
    clicks = [data for kind, data in reports if kind == "click"]
    if not clicks:
        return None
    click = clicks[0]
    paints = [data for kind, data in reports if kind == "paint" and data["at"] > click["at"]
              and (confirmation is None or data["path"].endswith(confirmation))]
    return (click, paints[0]) if paints else None


def _pair(email: str, reports: list[tuple[str, dict[str, Any]]],
          confirmation: str | None = "/register/sent") -> BrowserSignup:
    """The click, its Event Timing entries and the confirmation's paint, as one sign-up."""
    found = _click_and_paint(reports, confirmation)
    if found is None:
        raise ProbeFailed(f"{email}: the browser reported no click or no confirmation paint")
    click, paint = found
    entries = [data for kind, data in reports if kind == "event"]
    # INP takes an interaction's longest entry (pointerdown, pointerup, click).
    longest = max(entries, key=lambda e: e["duration"], default=None)
    response_end = paint["response_end"] if paint["response_end"] is not None else paint["at"]
    response_ms = round(response_end - click["at"], 1)
    return BrowserSignup(
        email=email, trusted=bool(click["trusted"]),
        click_to_confirmation_ms=round(paint["at"] - click["at"], 1),
        event_ms=None if longest is None else round(longest["duration"], 1),
        processing_ms=None if longest is None else round(longest["processing"], 1),
        presentation_ms=None if longest is None else round(longest["presentation"], 1),
        response_ms=response_ms, render_ms=round(paint["at"] - response_end, 1),
        proxy_ms=round(response_ms + RENDER_ALLOWANCE_MS, 1))
