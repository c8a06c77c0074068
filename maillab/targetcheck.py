"""``maillab target check FILE``: start a target once, walk one sign-up step by step and say
what each step got (status, extracted values, the email's subject and link, the
verification's answer), then stop everything. The way to debug a target file before a bench:
every mistake is one line naming the file and the key.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from loadtests.steps import Answer, StepFailed, email_link, register, verify
from loadtests.target import Target, fill
from maillab.ports import free_port
from maillab.processes import ManagedProcess, ProcessError, Supervisor
from maillab.services import ServiceError, private_services
from maillab.targetrun import Sizing, Smtp, recipes, reset_database, start

INBOX_WAIT_S = 15.0


class CheckFailed(RuntimeError):
    """The target could not be walked; the message says where, in one line."""


class RequestsHttp:
    """loadtests.steps.Http over a requests Session (one person's cookies); every answer is
    told to ``say``."""

    def __init__(self, base_url: str, say: Callable[[str], None]) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.say = say

    def request(self, method: str, url: str, *, name: str, form: dict[str, str] | None = None,
                json: Any = None, headers: dict[str, str] | None = None,
                judge: Callable[[int], str | None] = lambda _s: None) -> Answer:
        full = url if url.startswith(("http://", "https://")) else self.base_url + url
        started = time.perf_counter()
        try:
            response = self.session.request(method, full, data=form, json=json,
                                            headers=headers, allow_redirects=False, timeout=60)
        except requests.RequestException as exc:
            raise StepFailed(f"{name}: {method} {full}: {exc}") from None
        ms = (time.perf_counter() - started) * 1000
        verdict = judge(response.status_code)
        sent = f" with {', '.join(sorted(form))}" if form else ""
        where = response.headers.get("Location")
        shown = url.removeprefix(self.base_url) or "/"
        self.say(f"{name:<14} {method} {shown}{sent} -> {response.status_code} in {ms:.0f} ms"
                 + (f", Location {where}" if where else "") + (f"  ({verdict})" if verdict else ""))
        return Answer(response.status_code, response.text, where)


def check(target: Target, variant: str, work: Path, say: Callable[[str], None]) -> bool:
    """Walk one sign-up of ``variant``; True when it was accepted, its email arrived and (where
    the target verifies) the link verified it. Raises TargetError or CheckFailed."""
    info = target.variant(variant)
    with Supervisor(work) as supervisor:
        smtp_port, api_port = free_port(), free_port()
        smtp = supervisor.spawn("fakesmtp", ["smtp", "--port", str(smtp_port), "--api-port",
                                             str(api_port)], dict(os.environ),
                                 work / "fakesmtp.log")
        try:
            smtp.wait_for_line(r"^fakesmtp HTTP API ", timeout=30)
        except ProcessError as exc:
            raise CheckFailed(f"fakesmtp did not start: {exc}") from None
        api = f"http://127.0.0.1:{api_port}"
        try:
            services = private_services(variant, info.broker, supervisor, work)
        except ServiceError as exc:
            raise CheckFailed(str(exc)) from None
        started = recipes(target, variant, Sizing(workers=1, threads=4, worker_threads=2),
                          Smtp("127.0.0.1", smtp_port), work / "cell", services)
        (work / "cell").mkdir(parents=True, exist_ok=True)
        reset_database(target, started, work / "cell")
        children: list[ManagedProcess] = []
        for recipe in started.recipes:
            say(f"starting {recipe.name}: {shlex.join(recipe.argv)}")
            try:
                children.append(start(supervisor, recipe))
            except ProcessError as exc:
                raise CheckFailed(str(exc)) from None
        if not started.recipes:
            say(f"driving {started.url} (started elsewhere)")
        http = RequestsHttp(started.url, say)
        address = fill(target.email.address, {"id": uuid.uuid4().hex[:12]}, "email.address")
        values = {"email": address, "password": target.password}
        say(f"signing up as {address}")
        done = register(target, http, values)
        if done.values.keys() - values.keys():
            extracted = {k: v for k, v in done.values.items() if k not in values}
            say(f"extracted      {extracted}")
        if not done.accepted:
            post = target.signup[target.sign_up_step]
            say(f"the sign-up answered {done.status}, which the target does not call accepted "
                f"(signup[{target.sign_up_step}].accepted = {post.accepted})")
            return False
        if not info.sends_email:
            say(f"{variant} sends no email (sends_email = false): done")
            return True
        message = _await(api, address)
        if message is None:
            say(f"no email to {address} within {INBOX_WAIT_S:g} s (see {work}/*.log)")
            return False
        link = email_link(target, message)
        parts = [p for p in ("text", "html") if message.get(p)]
        say(f"email          {message.get('subject')!r} ({' and '.join(parts) or 'no'} part"
            f"{'s' if len(parts) > 1 else ''}), link {link.removeprefix(started.url)}")
        if target.verify is None:
            return True
        verified = verify(target, http, link, done.values)
        say(f"verified       {'yes' if verified.verified else 'NO'} ({verified.status}"
            f"{', ' + verified.note if verified.note else ''}; verify.verified = "
            f"{target.verify.verified})")
        return verified.verified


def _await(api: str, address: str) -> dict[str, Any] | None:
    query = {"to": address, "wait": str(INBOX_WAIT_S)}
    response = requests.get(f"{api}/api/messages", params=query, timeout=INBOX_WAIT_S + 10)
    messages = response.json()
    return messages[-1] if messages else None


def run_check(target: Target, variants: list[str], say: Callable[[str], None]) -> bool:
    names = variants or list(target.variants)
    ok = True
    for name in names:
        target.variant(name)  # a TargetError naming the variants there are
        say(f"== {target.name}: variant {name}")
        work = Path(tempfile.mkdtemp(prefix="maillab-check-"))
        passed = False
        try:
            passed = check(target, name, work, say)
        except StepFailed as exc:
            raise CheckFailed(str(exc)) from None
        finally:
            if passed:
                shutil.rmtree(work, ignore_errors=True)
            else:  # what the processes said stays for whoever debugs the target
                say(f"logs kept in {work}")
        ok = ok and passed
    return ok
