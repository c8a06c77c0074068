"""A target's sign-up, executed: its steps over an HTTP client, the link taken from the email,
the verification. The locust user (loadtests/locustfile.py) runs them under load through
locust's client; ``maillab target check`` runs them once through requests and prints each
answer. Nothing here knows which app it talks to: the target file says it all.

Forms are read with the standard library's html.parser: a browser sends a form's hidden
inputs (a Flask-WTF or Django CSRF token) and the button it clicked, so the steps do too,
with no regex to write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Protocol
from urllib.parse import urljoin

from loadtests.target import Step, Target, TargetError, fill

# A link in an email's text or HTML: http(s) URLs, or the href of an anchor.
_URL = re.compile(r"""https?://[^\s"'<>]+""")
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SHOWN = 200  # characters of an answer quoted in an error


class StepFailed(Exception):
    """The sign-up could not go on; the message says which step and why, in one line."""


@dataclass(frozen=True)
class Answer:
    """What a step got: the status, the body, the redirect's Location."""

    status: int
    text: str
    location: str | None


class Http(Protocol):
    """What the steps need of an HTTP client: one request, no redirect followed, the person's
    cookies kept between calls. ``name`` is what the sample is called; ``judge`` turns the
    status into a failure message (None: success) for clients that record one."""

    def request(self, method: str, url: str, *, name: str,
                form: dict[str, str] | None = None, json: Any = None,
                headers: dict[str, str] | None = None,
                judge: Callable[[int], str | None] = lambda _s: None) -> Answer: ...


@dataclass
class Form:
    action: str | None
    method: str
    fields: dict[str, str] = field(default_factory=dict)  # hidden inputs and the first submit
    names: list[str] = field(default_factory=list)  # every named input, for the errors


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._submitted: set[int] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action") or None, (a.get("method") or "get").upper()))
            return
        if not self.forms or tag not in ("input", "button"):
            return
        form, name = self.forms[-1], a.get("name")
        if not name:
            return
        form.names.append(name)
        kind = a.get("type", "submit" if tag == "button" else "text").lower()
        if kind == "hidden":
            form.fields[name] = a.get("value", "")
        elif kind == "submit" and id(form) not in self._submitted:
            # The button a person clicks is sent with its value, as a browser does.
            form.fields[name] = a.get("value", "")
            self._submitted.add(id(form))


def forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    parser.close()
    return parser.forms


def _shown(text: str) -> str:
    return re.sub(r"\s+", " ", text[:SHOWN]).strip()


def _page_form(page: str, url: str, path: str | None) -> Form | None:
    """The form on ``page`` that posts to ``path`` (its action resolved against ``url``), or
    the page's only one that posts."""
    posting = [f for f in forms(page) if f.method == "POST"]
    if path is not None:
        target_url = urljoin(url, path).split("?")[0]
        for form in posting:
            if urljoin(url, form.action or url).split("?")[0] == target_url:
                return form
    return posting[0] if len(posting) == 1 else None


@dataclass
class Registered:
    """What the sign-up's steps got: the post's status and whether the target calls it
    accepted (the person told to check their email), and the values the steps extracted."""

    status: int | None
    accepted: bool
    values: dict[str, str]
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (step, status, note)


def register(target: Target, http: Http, values: dict[str, str],
             on_post: Callable[[], None] = lambda: None,
             on_told: Callable[[], None] = lambda: None) -> Registered:
    """Run the target's signup steps. ``on_post`` is called just before the sign-up's post is
    sent, ``on_told`` once the page the person sees after it has arrived (the redirect
    followed). Raises StepFailed when a step cannot go on."""
    source = target.source
    values = dict(values)
    page, page_url = "", ""
    done = Registered(None, False, values)
    for index, step in enumerate(target.signup):
        where = f"{source}: signup[{index}]"
        name = target.step_name(index)
        url = fill(step.path, values, where)
        form = None
        if step.form is not None:
            found = _page_form(page, page_url, url) if page else None
            form = {**(found.fields if found else {}),
                    **{k: fill(v, values, f"{where}.form.{k}") for k, v in step.form.items()}}
        body = None if step.json_body is None else _filled(step.json_body, values, where)
        headers = {k: fill(v, values, f"{where}.headers.{k}") for k, v in step.headers.items()}
        is_post = index == target.sign_up_step
        if is_post:
            on_post()
        answer = http.request(step.method, url, name=name, form=form, json=body,
                              headers=headers, judge=_judge(step))
        done.answers.append((name, answer.status, ""))
        if is_post:
            done.status = answer.status
            done.accepted = answer.status in step.accepted
            if not done.accepted:
                return done  # a visible failure (or a status the target does not expect)
        elif answer.status not in step.accepted:
            raise StepFailed(f"{where}: {step.method} {url} answered {answer.status}, expected "
                             f"{_statuses(step.accepted)}: {_shown(answer.text)!r}")
        page, page_url = answer.text, url
        _extract(step, answer.text, values, where)
        if step.follow and answer.location:
            page_url = urljoin(url, answer.location)
            followed = http.request("GET", page_url, name="register_sent" if is_post else name,
                                    judge=lambda s: None if s < 400 else f"answered {s}")
            done.answers.append(("register_sent" if is_post else name, followed.status,
                                 page_url))
            page = followed.text
        if is_post:
            on_told()
    return done


def _filled(value: Any, values: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        return fill(value, values, where)
    if isinstance(value, dict):
        return {k: _filled(v, values, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, values, where) for v in value]
    return value


def _statuses(codes: list[int]) -> str:
    return " or ".join(str(c) for c in codes)


def _judge(step: Step) -> Callable[[int], str | None]:
    def judge(status: int) -> str | None:
        if status in step.accepted:
            return None
        return f"expected {_statuses(step.accepted)}, got {status}"
    return judge


def _extract(step: Step, text: str, values: dict[str, str], where: str) -> None:
    for name, pattern in step.extract.items():
        found = re.search(pattern, text)
        if found is None:
            raise TargetError(f"{where}.extract.{name}: {pattern!r} found nothing in the "
                              f"answer, which begins {_shown(text)!r}")
        values[name] = found.group(1)


def email_link(target: Target, message: dict[str, Any]) -> str:
    """The verification link in a captured message (fakesmtp's JSON: text, html), or a
    TargetError naming the email key and what it searched."""
    parts = {"text": message.get("text") or "", "html": message.get("html") or ""}
    searched = [parts[target.email.part]] if target.email.part != "any" else [
        parts["text"], parts["html"]]
    where = f"{target.source}: email"
    for body in searched:
        if target.email.link_regex is not None:
            found = re.search(target.email.link_regex, body)
            if found:
                return _unescape(found.group(1))
            continue
        for link in [*_HREF.findall(body), *_URL.findall(body)]:
            if target.email.link and target.email.link in link:
                return _unescape(link)
    what = (f"link_regex {target.email.link_regex!r}" if target.email.link_regex
            else f"a link containing {target.email.link!r}")
    text = " | ".join(_shown(b) for b in searched if b) or "(empty)"
    raise TargetError(f"{where}: {what} not found in the {target.email.part} part(s) of "
                      f"{message.get('subject')!r}, which begin {text!r}")


def _unescape(link: str) -> str:
    return link.replace("&amp;", "&")


@dataclass
class Verified:
    status: int
    verified: bool
    note: str = ""


def verify(target: Target, http: Http, link: str, values: dict[str, str],
           name: str = "verify") -> Verified:
    """Confirm the address: GET the link (and submit the form on that page when the target
    says so); the last answer's status decides, with the redirect's Location where the
    target names one."""
    spec = target.verify
    assert spec is not None
    where = f"{target.source}: verify"
    url = fill(spec.get, {**values, "link": link}, f"{where}.get")
    headers = {k: fill(v, values, f"{where}.headers.{k}") for k, v in spec.headers.items()}
    judge = _verdict_judge(spec.verified)
    if not spec.submit_form:
        answer = http.request("GET", url, name=name, headers=headers, judge=judge)
        return _verdict(answer, spec.verified, spec.location, spec.text)
    page = http.request("GET", url, name=f"{name}_page", headers=headers,
                        judge=lambda s: None if s < 400 else f"answered {s}")
    form = _page_form(page.text, url, None)
    if form is None:
        raise TargetError(f"{where}.submit_form: no single form that posts on the page at "
                          f"{url} (answered {page.status}), which begins {_shown(page.text)!r}")
    action = urljoin(url, form.action or url)
    fields = {**form.fields, **{k: fill(v, values, f"{where}.form.{k}")
                                for k, v in spec.form.items()}}
    answer = http.request("POST", action, name=name, form=fields, headers=headers, judge=judge)
    return _verdict(answer, spec.verified, spec.location, spec.text)


def _verdict_judge(verified: list[int]) -> Callable[[int], str | None]:
    def judge(status: int) -> str | None:
        return None if status in verified else f"verify answered {status}"
    return judge


def _verdict(answer: Answer, verified: list[int], location: str | None,
             text: str | None) -> Verified:
    ok = answer.status in verified
    if ok and location is not None and re.search(location, answer.location or "") is None:
        return Verified(answer.status, False, f"Location {answer.location!r} does not match "
                                              f"{location!r}")
    if ok and text is not None and re.search(text, answer.text) is None:
        return Verified(answer.status, False, f"the answer does not match {text!r}; it begins "
                                              f"{_shown(answer.text)!r}")
    return Verified(answer.status, ok, answer.location or "")
