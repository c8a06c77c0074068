"""Target files (loadtests/target.py): the format, its one-line errors, the steps run against
real apps, and `maillab target check` walking every shipped target."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask, redirect, request

from loadtests.steps import Answer, StepFailed, email_link, register, verify
from loadtests.target import (
    BUILT_IN_FILE,
    LAB_PLACEHOLDERS,
    TargetError,
    built_in,
    fill,
    load_target,
)
from maillab.cli import cli
from maillab.processes import ProcessError, Supervisor
from maillab.services import CellServices
from maillab.targetrun import Sizing, Smtp, recipes, start, values_for

ROOT = Path(__file__).resolve().parent.parent
FLASK_SECURITY = ROOT / "examples" / "flask-security" / "maillab.toml"
CLUB = ROOT / "tests" / "targets" / "mailman" / "maillab.toml"

MINIMAL = """
name = "mini"
[app]
command = "python -m http.server ${port} --bind 127.0.0.1"
[variants.only]
[[signup]]
post = "/join"
form = { address = "${email}" }
"""


def write(tmp_path: Path, text: str, name: str = "maillab.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


BOOT = 'import time; print(\\"booting ${port}\\", flush=1); time.sleep(30)'


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(TargetError) as caught:
        load_target(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(str(tmp_path / "maillab.toml"))
    return message.removeprefix(str(tmp_path / "maillab.toml") + ": ")


# -- the format ----------------------------------------------------------------------------


def test_the_built_in_target_says_what_each_variant_is() -> None:
    target = built_in()
    assert Path(target.source) == BUILT_IN_FILE
    celery = ["celery-early-rabbitmq", "celery-late-rabbitmq", "celery-early-redis",
              "celery-late-redis", "celery-late-redis-vt10"]
    assert list(target.variants) == ["baseline", "sync", "threaded", "queued", "outbox",
                                     *celery]
    assert [n for n, v in target.variants.items() if not v.sends_email] == ["baseline"]
    assert {n: v.consumer for n, v in target.variants.items() if v.consumer} == {
        "queued": "worker", "outbox": "relay", **{n: "celery-worker" for n in celery}}
    assert {n: v.broker for n, v in target.variants.items() if v.broker} == {
        "queued": "queue", **{n: n.split("-")[2] for n in celery}}
    assert [n for n, v in target.variants.items() if v.waits_for_smtp] == ["sync"]
    assert [target.step_name(i) for i in range(len(target.signup))] == [
        "register_form", "register"]
    assert len(target.sha256) == 64


def test_a_target_loads_from_a_folder_or_a_pyproject_table(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    assert load_target(tmp_path).name == "mini"
    other = tmp_path / "proj"
    other.mkdir()
    table = MINIMAL.replace("[app]", "[tool.maillab.app]").replace(
        "[variants.only]", "[tool.maillab.variants.only]").replace(
        "[[signup]]", "[[tool.maillab.signup]]").replace('name = "mini"', "")
    write(other, '[tool.maillab]\nname = "proj"\n' + table, "pyproject.toml")
    found = load_target(other)
    assert found.name == "proj" and Path(found.source).name == "pyproject.toml"


@pytest.mark.parametrize(("text", "expected"), [
    # an unknown step kind
    (MINIMAL + '[[signup]]\nput = "/x"\n', r"^signup\.1\.put: unknown key$"),
    # a placeholder with no value
    (MINIMAL.replace("${email}", "${emial}"),
     r"^signup\[0\]: placeholder \$\{emial\} has no value here; known: email, password$"),
    (MINIMAL.replace("${port}", "${prot}"), r"^app\.command: placeholder \$\{prot\} has no"),
    # a regex without a group
    (MINIMAL + "extract = { token = 'value=\"[^\"]+\"' }\n",
     r"^signup\.0\.extract: token: the regex needs exactly one \(group\)"),
    # a variant that names a process the file does not have
    (MINIMAL.replace("[variants.only]", '[variants.only]\ndelivered_by = "worker"'),
     r"^variants\.only: names process 'worker', which \[processes\] does not have \(none\)$"),
    (MINIMAL.replace('command = "python', 'commnd = "python'), r"^app\.commnd: unknown key$"),
    (MINIMAL.replace('post = "/join"', 'get = "/join"\npost = "/join"'),
     r"a step is either get = PATH or post = PATH"),
    (MINIMAL + '[email]\naddress = "fixed@example.com"\n', r"address must contain \$\{id\}"),
    ('name = "x"\n[variants.a]\n[[signup]]\npost = "/"\n', r"^app: required$"),
    (MINIMAL.replace("${email}", "$email"), r"a '\$' must start a \$\{name\} placeholder"),
])
def test_each_mistake_gets_one_line_naming_the_key(tmp_path: Path, text: str,
                                                   expected: str) -> None:
    assert re.search(expected, error_of(tmp_path, text))


def test_a_missing_or_broken_file_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"no such target file"):
        load_target(tmp_path / "nope.toml")
    with pytest.raises(TargetError, match=r"not valid TOML"):
        load_target(write(tmp_path, "name = \n"))
    (tmp_path / "x").mkdir()
    write(tmp_path / "x", '[project]\nname = "p"\n', "pyproject.toml")
    with pytest.raises(TargetError, match=r"no \[tool.maillab\] table"):
        load_target(tmp_path / "x")


def test_placeholders_fill_and_dollars_escape() -> None:
    assert fill("u-${id}@x.org costs $$5", {"id": "7"}, "k") == "u-7@x.org costs $5"
    with pytest.raises(TargetError, match=r"^k: placeholder \$\{nope\} has no value"):
        fill("${nope}", {}, "k")


def test_the_readme_example_is_a_target_that_loads(tmp_path: Path) -> None:
    """The README's annotated example parses as written (it is what people copy)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your own app: target files", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    target = load_target(write(tmp_path, example))
    assert list(target.variants) == ["inline", "queued"]
    assert target.variants["queued"].consumer == "worker"


# -- the steps, against real apps ----------------------------------------------------------


class FlaskHttp:
    """loadtests.steps.Http over a Flask test client (a real app, in process)."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.calls: list[tuple[str, str, dict[str, str] | None]] = []

    def request(self, method: str, url: str, *, name: str, form: dict[str, str] | None = None,
                json: Any = None, headers: dict[str, str] | None = None,
                judge: Callable[[int], str | None] = lambda _s: None) -> Any:
        self.calls.append((name, method, form))
        response = self.client.open(url, method=method, data=form, json=json, headers=headers)
        return Answer(response.status_code, response.get_data(as_text=True),
                      response.headers.get("Location"))


def club_like_app(sent: list[dict[str, str]]) -> Flask:
    """A hand-written sign-up: a hidden token, a 200 "check your inbox", an HTML-only email
    and a confirm page whose form must be posted."""
    app = Flask("clubish")

    @app.get("/join")
    def join_form() -> str:
        return ('<form method="post" action="/join"><input type="hidden" name="tok" value="T1">'
                '<input name="address"><input type="submit" name="go" value="Join"></form>')

    @app.post("/join")
    def join() -> tuple[str, int]:
        if request.form.get("tok") != "T1" or request.form.get("go") != "Join":
            return "bad form", 400
        sent.append({"subject": "Confirm", "text": "", "html":
                     '<p><a href="http://localhost/confirm/abc?x=1&amp;y=2">confirm</a></p>'})
        return "Check your inbox, code=42", 200

    @app.route("/confirm/abc", methods=["GET", "POST"])
    def confirm() -> Any:
        if request.method == "GET":
            return ('<form method="post"><input type="hidden" name="tok" value="T2">'
                    '<button>Confirm</button></form>')
        if request.form.get("tok") != "T2":
            return "no", 400
        return redirect("/done")

    return app


CLUBISH = """
name = "clubish"
[app]
base_url = "http://localhost"
[variants.now]
[[signup]]
get = "/join"
[[signup]]
post = "/join"
form = { address = "${email}" }
extract = { code = 'code=(\\d+)' }
[email]
address = "m-${id}@example.org"
link = "/confirm/"
part = "html"
[verify]
submit_form = true
verified = [302]
location = "/done$"
"""


def test_the_steps_send_hidden_inputs_extract_values_and_post_the_confirm_form(
        tmp_path: Path) -> None:
    sent: list[dict[str, str]] = []
    target = load_target(write(tmp_path, CLUBISH))
    http = FlaskHttp(club_like_app(sent))
    done = register(target, http, {"email": "m-1@example.org", "password": "pw"})
    assert done.accepted and done.status == 200 and done.values["code"] == "42"
    assert http.calls[1][2] == {"tok": "T1", "go": "Join", "address": "m-1@example.org"}
    link = email_link(target, sent[0])
    assert link == "http://localhost/confirm/abc?x=1&y=2"
    result = verify(target, http, link, done.values)
    assert result.verified and result.status == 302


def test_an_extraction_that_finds_nothing_quotes_what_it_searched(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, CLUBISH.replace("code=(", "ticket=(")))
    with pytest.raises(TargetError) as caught:
        register(target, FlaskHttp(club_like_app([])), {"email": "a@b.org", "password": "p"})
    assert re.search(r"signup\[1\]\.extract\.code: 'ticket=\(\\\\d\+\)' found nothing in the "
                     r"answer, which begins 'Check your inbox, code=42'", str(caught.value))


def test_a_link_not_in_the_named_part_says_what_it_searched(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, CLUBISH.replace('part = "html"', 'part = "text"')))
    message = {"subject": "Confirm", "text": "Hello", "html": '<a href="/confirm/x">'}
    with pytest.raises(TargetError, match=r"email: a link containing '/confirm/' not found in "
                       r"the text part\(s\) of 'Confirm', which begin 'Hello'"):
        email_link(target, message)


def test_a_refused_sign_up_is_a_visible_failure_not_an_error(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, CLUBISH))
    app = club_like_app([])
    http = FlaskHttp(app)
    http.client.get("/join")
    done = register(target.model_copy(update={"signup": target.signup[1:]}), http,
                    {"email": "a@b.org", "password": "p"})
    assert done.status == 400 and not done.accepted


def test_a_failing_get_step_stops_the_sign_up_with_its_answer(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, CLUBISH.replace('get = "/join"', 'get = "/nowhere"')))
    with pytest.raises(StepFailed, match=r"signup\[0\]: GET /nowhere answered 404, expected "
                       r"200"):
        register(target, FlaskHttp(club_like_app([])), {"email": "a@b.org", "password": "p"})


# -- starting a target ---------------------------------------------------------------------


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    with Supervisor(tmp_path) as owned:
        yield owned


def test_an_app_that_never_answers_its_readiness_url_shows_its_last_lines(
        tmp_path: Path, supervisor: Supervisor) -> None:
    target = load_target(write(tmp_path, f"""
        name = "sleepy"
        [app]
        command = "{sys.executable} -c '{BOOT}'"
        ready_timeout_s = 1
        [variants.only]
        [[signup]]
        post = "/"
        """))
    started = recipes(target, "only", Sizing(), Smtp("127.0.0.1", 1), tmp_path / "cell",
                      CellServices(None, None))
    with pytest.raises(ProcessError) as caught:
        start(supervisor, started.recipes[0])
    message = str(caught.value)
    assert re.search(r"^only was not ready: http://127\.0\.0\.1:\d+/ did not answer below 500 "
                     r"within 1 s \(.*\); its last lines \(.*app\.log\): booting \d+$", message)
    assert not supervisor.children  # stopped, not left running


def test_a_program_that_is_not_there_is_named(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, MINIMAL.replace("python -m http.server", "no-such-prog")))
    with pytest.raises(TargetError, match=r"app\.command: program 'no-such-prog' not found"):
        recipes(target, "only", Sizing(), Smtp("127.0.0.1", 1), tmp_path / "cell",
                CellServices(None, None))


def test_the_lab_fills_every_placeholder_of_its_own_variants(tmp_path: Path) -> None:
    started = recipes(built_in(), "outbox", Sizing(consumers=2), Smtp("127.0.0.1", 2525),
                      tmp_path / "cell", CellServices(None, None))
    app, *relays = started.recipes
    assert app.argv[1:4] == ["serve", "outbox", "--port"]
    assert app.env["MAILLAB_SMTP_PORT"] == "2525" and app.env["MAILLAB_SMTP_USE_TLS"] == "0"
    assert [r.argv[-1] for r in relays] == ["maillab-relay-1", "maillab-relay-2"]
    assert relays[0].metrics_url != relays[1].metrics_url
    # The lab fills every placeholder the format names, and only those.
    assert set(values_for(built_in(), "outbox", Sizing(), Smtp("127.0.0.1", 1),
                          tmp_path / "cell", CellServices(None, None), 1)) == set(
        LAB_PLACEHOLDERS)
    declared = set(built_in().app.env)  # not what the test process inherited
    assert not any("${" in word for r in started.recipes
                   for word in [*r.argv, *(v for k, v in r.env.items() if k in declared)])


# -- maillab target check on every shipped target ------------------------------------------


def test_target_check_on_a_bad_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["target", "check", str(write(
        tmp_path, MINIMAL.replace("${email}", "${emial}")))])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "placeholder ${emial} has no value" in result.output
    result = CliRunner().invoke(cli, ["target", "check", str(BUILT_IN_FILE), "--variant", "x"])
    assert result.exit_code == 1 and "no variant 'x'; this target has baseline" in result.output


def _check(path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "maillab", "target", "check", str(path), *args],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.mark.slow
def test_target_check_walks_the_built_in_target() -> None:
    # The five of apps/ and Celery on each broker (each on a private broker it starts).
    variants = ["baseline", "sync", "threaded", "queued", "outbox", "celery-late-rabbitmq",
                "celery-early-redis"]
    out = _check(BUILT_IN_FILE, *(f"--variant={v}" for v in variants))
    assert out.count("verified       yes (200") == 6  # every variant that sends email
    assert "baseline sends no email" in out
    assert "starting relay:" in out and "starting worker:" in out
    assert out.count("starting celery-worker:") == 2


@pytest.mark.slow
def test_target_check_walks_the_flask_security_example() -> None:
    pytest.importorskip("flask_security", reason="pip install -e .[examples]")
    out = _check(FLASK_SECURITY)
    assert out.count("verified       yes (302, /welcome") == 2
    assert re.search(r"register +POST /register with csrf_token, email, next, password, "
                     r"password_confirm, submit -> 302", out)


@pytest.mark.slow
def test_target_check_walks_a_target_written_from_the_readme() -> None:
    """tests/targets/mailman: a hand-written Flask-Mailman + Flask-WTF app whose link is only
    in the HTML part and whose confirmation is a form POST; its maillab.toml was written from
    the README alone."""
    pytest.importorskip("flask_mailman", reason="pip install -e .[examples]")
    out = _check(CLUB)
    assert out.count("verified       yes") == 2
    assert "(html part)" in out


# -- maillab bench on a target that is not maillab's ---------------------------------------


@pytest.mark.slow
def test_a_smoke_bench_on_a_target_written_from_the_readme(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`maillab bench --target` on the club app (Flask-Mailman, an HTML-only link, a confirm
    form): every cell valid, every sign-up in one bucket, verified through its confirm form,
    the browser probe typing into its own fields, the run gated by the rules every target
    shares, and the run naming its target."""
    pytest.importorskip("flask_mailman", reason="pip install -e .[examples]")
    from maillab.probe import ProbeUnavailable, find_chromium

    try:
        find_chromium()
        browser = 2
    except ProbeUnavailable:
        browser = 0
    from tests.test_bench import processes_of

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "results" / "club"
    # The smoke profile made smaller: the club app hashes passwords with werkzeug's scrypt
    # (its own choice), so 4 sign-ups/s, 30 a cell.
    profile = write(tmp_path, (ROOT / "loadtests" / "profiles" / "smoke.toml").read_text()
                    .replace("rates = [20]", "rates = [4]")
                    .replace("min_signups = 60", "min_signups = 30")
                    # Chromium, the app and another test process share two cores: this test
                    # is about the target path and the counting, not the start lag bound.
                    + "max_start_lag_ms = 200\n", "smoke.toml")
    result = CliRunner().invoke(cli, [
        "bench", "--target", str(CLUB), "--profile", str(profile),
        "--browser", str(browser), "--out", str(run_dir), "--gate"])
    assert result.exit_code == 0, result.output
    assert "enumeration: the account-enumeration probe drives maillab's own /resend" in (
        result.output)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["target"]["name"] == "club" and not results["target"]["built_in"]
    assert list(results["target"]["variants"]) == ["now", "later"]
    assert results["enumeration"] == []
    assert [c["variant"] for c in results["cells"]] == ["now", "later"]
    for cell in results["cells"]:
        d, a = cell["delivery"], cell["arrivals"]
        assert cell["valid"], cell["warnings"]
        assert (a["dropped"] + d["failed_visibly"] + d["delivered"] + d["refused"]
                + d["missing"]) == a["offered"]
        assert d["missing"] == d["failed_visibly"] == 0 and d["verified"] == d["delivered"]
        if browser:
            assert cell["browser"]["count"] == browser, cell.get("browser_note")
    # Sending in the request cannot cost less than the SMTP time (100 ms in smoke); how much
    # less the thread costs is a benchmark's figure, not a unit test's.
    now = results["cells"][0]
    assert now["register"]["p50_ms"] >= now["smtp_latency_ms"]
    gate = json.loads((run_dir / "gate.json").read_text())
    assert gate["verdict"] == "pass"
    assert {o["rule"] for o in gate["rules"]} >= {"*{scenario=clean}.delivery.missing == 0"}
    assert "The app: <b>club</b>" in (run_dir / "report.html").read_text(encoding="utf-8")
    assert processes_of(run_dir) == []


ELSEWHERE = """
name = "club-elsewhere"
[app]
base_url = "http://127.0.0.1:PORT"
ready = "/healthz"
[variants.elsewhere]
summary = "club.py started by hand with CLUB_SEND=later"
[[signup]]
get = "/join"
[[signup]]
post = "/join"
form = { address = "${email}", secret = "${password}" }
[email]
address = "u-${id}@example.com"
link = "/confirm/"
part = "html"
[verify]
submit_form = true
text = "Membership confirmed"
"""


@pytest.mark.slow
def test_a_bench_drives_an_app_that_runs_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target with base_url: the lab starts no process, drives the app where it runs (on
    loopback), reads fakesmtp's capture on the port the app's settings name, and leaves out,
    with the reason, the scenarios that would stop or signal it."""
    pytest.importorskip("flask_mailman", reason="pip install -e .[examples]")
    from maillab.ports import free_port

    smtp_port, app_port = free_port(), free_port()
    club = CLUB.parent
    env = {**os.environ, "CLUB_MAIL_SERVER": "127.0.0.1", "CLUB_MAIL_PORT": str(smtp_port),
           "CLUB_DATABASE": str(tmp_path / "club.sqlite"), "CLUB_SEND": "later"}
    with Supervisor(tmp_path) as owned:
        app = owned.spawn_program("club", [str(Path(sys.executable).with_name("gunicorn")),
                                           "club:create_app()", "--bind",
                                           f"127.0.0.1:{app_port}", "--no-control-socket"],
                                  env, tmp_path / "club.log", club)
        app.wait_for_line("Booting worker", timeout=30)
        path = write(tmp_path, ELSEWHERE.replace("PORT", str(app_port)))
        profile = write(tmp_path, (ROOT / "loadtests" / "profiles" / "smoke.toml").read_text()
                        .replace("rates = [20]", "rates = [4]")
                        .replace("min_signups = 60", "min_signups = 20")
                        + 'scenarios = ["clean", "app-crash"]\nscenario_latencies_ms = [100]\n'
                        + "max_start_lag_ms = 200\n",
                        "smoke.toml")
        monkeypatch.chdir(tmp_path)
        run_dir = tmp_path / "results" / "elsewhere"
        result = CliRunner().invoke(cli, ["bench", "--target", str(path), "--profile",
                                          str(profile), "--smtp-port", str(smtp_port),
                                          "--out", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert app.alive()  # the lab stopped nothing of the app's
    results = json.loads((run_dir / "results.json").read_text())
    [cell] = results["cells"]
    assert cell["valid"], cell["warnings"]
    d = cell["delivery"]
    assert d["delivered"] == d["verified"] == d["registered"] > 0 and d["missing"] == 0
    assert results["skipped"]["app-crash"].startswith("not run: the app at http://127.0.0.1:")
    no_port = CliRunner().invoke(cli, ["bench", "--target", str(path), "--profile",
                                       str(profile)])
    assert no_port.exit_code == 1 and "give that port with --smtp-port" in no_port.output


def test_a_users_target_says_what_its_documentation_promises(tmp_path: Path) -> None:
    """``documented`` and ``broker`` on a target that is not maillab's (the club app): the
    claim loads and the report holds a cell to it; a scenario or broker the lab does not
    know is named in one line."""
    import copy
    import json

    from pydantic import TypeAdapter

    from loadtests.results import CellResult
    from reports.summary import documented_check

    club = CLUB.read_text(encoding="utf-8") + textwrap.dedent('''
        [variants.later.documented.app-crash]
        lost = "some"
        says = "A thread dies with the process."
        source = "https://example.org/club"
        ''')
    folder = tmp_path / "club"
    folder.mkdir()
    (folder / "maillab.toml").write_text(club, encoding="utf-8")
    claim = load_target(folder).variants["later"].documented["app-crash"]
    assert (claim.lost, claim.source) == ("some", "https://example.org/club")
    fixture = ROOT / "tests" / "report_fixtures" / "partial_run" / "results.json"
    cell = copy.deepcopy(json.loads(fixture.read_text())["cells"][-1])
    cell["delivery"]["missing"] = 0
    check = documented_check(claim, TypeAdapter(CellResult).validate_python(cell))
    assert not check.matches
    assert check.finding.startswith("Does not match the documentation: none lost silently")
    assert "unknown scenario 'app-melt'" in error_of(
        tmp_path, club.replace("documented.app-crash]", "documented.app-melt]"))
    assert "variants.later.broker" in error_of(
        tmp_path, club.replace("[variants.later]", "[variants.later]\nbroker = \"kafka\""))
