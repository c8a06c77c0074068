"""The Lab tab's place in locust's web UI (see loadtests/lab.py for what it shows).

Installed by the locustfile on the master or the only process whenever locust has a web UI:

- the lab's routes on locust's Flask app (``/lab/...``);
- locust's extension points for the version pinned: ``extended_tabs``/``extended_tables`` and
  ``extended_stats`` in ``/stats/requests``, so the stock UI shows the figures in a "Lab" tab
  (a table); and, when the project's own build of the UI is there (``webui/``, built with
  npm from the ``locust-ui`` package by ``make webui``), locust serves that build instead: the
  same tab with the charts, the controls and the lab's start form;
- a greenlet that gathers the sign-ups every 2 s (from this process, or from the workers'
  messages) and computes the figures while a test runs, and once more when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, MasterRunner, WorkerRunner

from loadtests.arrivals import KINDS, MAX_RATE, valid_rate
from loadtests.cellfiles import Registration
from loadtests.lab import (
    LOG,
    MESSAGE,
    PERIOD_S,
    WEBUI_BUILD,
    ActionError,
    Lab,
    actions_offered,
    registration_from,
    registration_json,
)
from loadtests.scenarios import CLEAN, SCENARIOS
from loadtests.target import built_in

TAB = {"title": "Lab", "key": "lab"}
# The stock UI's table of the tab: one row per figure.
TABLE = {"key": "lab", "structure": [{"key": "name", "title": "figure"},
                                     {"key": "value", "title": "value"}]}


def rows(figures: dict[str, Any]) -> list[dict[str, str]]:
    """The figures as the stock UI's table rows."""
    found = []
    for block in ("arrivals", "delivery", "time_to_inbox"):
        for name, value in (figures.get(block) or {}).items():
            if value is not None:
                found.append({"name": f"{block}.{name}", "value": f"{value:g}"
                              if isinstance(value, float) else str(value)})
    found.append({"name": "in_flight", "value": str(figures.get("in_flight", 0))})
    return found


class FieldError(ValueError):
    """A field of the lab's start form that cannot be used; the message names it."""


def start_scenarios() -> list[dict[str, str]]:
    """The scenarios the start form offers: clean and the SMTP ones, whose faults fakesmtp
    applies for the whole test (the process ones are buttons on the Lab tab)."""
    return [{"name": name, "summary": s.summary + (
        " (here: for the whole test, until lifted on the Lab tab)" if s.window_faults else "")}
        for name, s in SCENARIOS.items() if name == CLEAN or s.faults or s.window_faults]


def _variant_hosts(environment: Environment) -> dict[str, str]:
    """``--variant-hosts``: variant -> URL, as maillab ui started them (empty without it)."""
    text = str(getattr(environment.parsed_options, "variant_hosts", "") or "")
    return dict(pair.split("=", 1) for pair in text.split(",") if "=" in pair)


def swarm_form(form: Any, environment: Environment) -> dict[str, str]:
    """The lab's start form checked field by field and turned into locust's /swarm form."""
    from locust.util.timespan import parse_timespan

    from fakesmtp.latency import LatencyError, parse_latency

    hosts = _variant_hosts(environment)
    variant = form.get("variant", "")
    if hosts and variant not in hosts:
        raise FieldError(f"variant: {variant!r} is not one of {', '.join(hosts)}")
    try:
        users = int(form.get("users") or 0)
    except ValueError:
        raise FieldError(f"users: {form.get('users')!r} is not a whole number") from None
    if not 0 <= users <= 1000:
        raise FieldError(f"users: {users} is not within 0..1000")
    try:
        rate = float(form.get("arrival_rate") or 0)
    except ValueError:
        raise FieldError(f"arrival_rate: {form.get('arrival_rate')!r} is not a number "
                         "of sign-ups per second") from None
    if users == 0 and not valid_rate(rate):
        raise FieldError(f"arrival_rate: {rate:g} sign-ups per second is not within "
                         f"0 (exclusive)..{MAX_RATE} (or give closed-loop users instead)")
    arrivals = form.get("arrivals") or "constant"
    if arrivals not in KINDS:
        raise FieldError(f"arrivals: {arrivals!r} is not one of {', '.join(KINDS)}")
    latency = (form.get("smtp_latency") or "0ms").strip()
    try:
        parse_latency(latency)
    except LatencyError as exc:
        raise FieldError(f"smtp_latency: {exc}") from None
    name = form.get("scenario") or CLEAN
    offered = {s["name"] for s in start_scenarios()}
    if name not in offered:
        raise FieldError(f"scenario: {name!r} is not one of {', '.join(sorted(offered))}")
    chosen = SCENARIOS[name]
    rules = [*chosen.faults, *chosen.window_faults]
    run_time = (form.get("run_time") or "").strip()
    if run_time:
        try:
            parse_timespan(run_time)
        except ValueError:
            raise FieldError(f"run_time: {run_time!r} is not a time such as 20s, 3m or "
                             "1h20m") from None
    # Open loop: one user runs the schedule, one per worker when distributed (each takes
    # every n-th arrival).
    runner = environment.runner
    schedulers = max(1, runner.worker_count) if isinstance(runner, MasterRunner) else 1
    found = {"user_count": str(users or schedulers), "spawn_rate": str(users or schedulers),
             "host": hosts.get(variant, str(environment.host or "")),
             "arrival_rate": "0" if users else f"{rate:g}", "arrivals": arrivals,
             "smtp_latency": latency, "smtp_faults": ";".join(rules) or "none"}
    if hosts:
        found["variant"] = variant
    if run_time:
        found["run_time"] = run_time
    return found


def install_master(environment: Environment, lab: Lab,
                   local: Callable[[], tuple[list[Registration], int]] | None) -> None:
    """The routes, the tab and the gathering greenlet, on the process with the web UI;
    ``local`` drains this process's finished sign-ups (None on a master, whose workers send
    theirs)."""
    web_ui = environment.web_ui
    assert web_ui is not None
    from flask import Response, jsonify, request

    app = web_ui.app
    assert app is not None
    if (WEBUI_BUILD / "index.html").is_file():
        app.template_folder = str(WEBUI_BUILD)
        # locust-ui 2.43.4 (the newest on npm) asks these with GET; locust 2.47 answers POST.
        for path in ("/stop", "/stats/reset"):
            view = app.view_functions["locust." + ("stop" if path == "/stop" else
                                                   "reset_stats")]
            app.add_url_rule(path, f"maillab_get_{path.strip('/').replace('/', '_')}", view,
                             methods=["GET"])
    else:
        LOG.info("the lab's own web UI is not built (make webui): the stock UI shows the Lab "
                 "tab as a table")
    web_ui.template_args["extended_tabs"] = [TAB]
    web_ui.template_args["extended_tables"] = [TABLE]
    web_ui.template_args["lab_actions"] = actions_offered()
    # The stock "Download Data" tab offers the run as a bench cell too.
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./lab/run.zip", "title": "The last run as a bench cell (zip: samples, "
                                           "registrations, results.json, report.html)"}]
    hosts = _variant_hosts(environment)  # the variants maillab ui started
    web_ui.template_args["lab_variants"] = [
        {"name": name, "summary": v.summary} for name, v in built_in().variants.items()
        if not hosts or name in hosts]
    web_ui.template_args["lab_scenarios"] = start_scenarios()
    options = environment.parsed_options
    web_ui.template_args["lab_defaults"] = {
        "variant": getattr(options, "variant", "") or "threaded",
        "arrival_rate": getattr(options, "arrival_rate", 10) or 10,
        "smtp_latency": getattr(options, "smtp_latency", "") or "0ms"}

    @app.after_request
    def _extend_stats(response: Response) -> Response:
        if request.path == "/stats/requests" and response.is_json:
            body = response.get_json()
            body["extended_stats"] = [{"key": "lab", "data": rows(lab.last)}]
            response.set_data(json.dumps(body))
        return response

    @app.route("/lab/state")
    def _state() -> Response:
        return jsonify(lab.last or lab.figures())

    @app.route("/lab/swarm", methods=["POST"])
    def _swarm() -> Any:
        try:
            form = swarm_form(request.form, environment)
        except FieldError as exc:
            return jsonify({"success": False, "message": str(exc)}), 400
        # locust's own /swarm starts the test, with the form it understands.
        with app.test_request_context("/swarm", method="POST", data=form):
            return app.view_functions["locust.swarm"]()

    @app.route("/lab/run.zip")
    def _run_zip() -> Any:
        from flask import send_file

        from loadtests.labrun import archive

        try:
            return send_file(archive(lab.build()), as_attachment=True)
        except ActionError as exc:
            return jsonify({"error": str(exc)}), 409
        except (OSError, ValueError) as exc:  # the files or fakesmtp could not be read
            return jsonify({"error": f"the run could not be built: {exc}"}), 500

    @app.route("/lab/report")
    def _report() -> Any:
        from flask import send_file

        try:
            return send_file(lab.build() / "report.html")
        except ActionError as exc:
            return jsonify({"error": str(exc)}), 409
        except (OSError, ValueError) as exc:
            return jsonify({"error": f"the run could not be built: {exc}"}), 500

    @app.route("/lab/actions")
    def _actions() -> Response:
        return jsonify(actions_offered())

    @app.route("/lab/action", methods=["POST"])
    def _action() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        name = body.get("name") if isinstance(body, dict) else request.form.get("name")
        if not isinstance(name, str) or not name:
            return jsonify({"error": "name: give the action to take, e.g. smtp-outage"}), 400
        try:
            action = lab.act(name)
        except ActionError as exc:
            return jsonify({"error": str(exc)}), 400
        lab.figures()
        return jsonify({"action": action.__dict__}), 200

    def _reset(**_kw: Any) -> None:  # locust's "Reset": a new window, the same test's files
        lab.reset()
        lab.figures()

    environment.events.reset_stats.add_listener(_reset)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        def _from_worker(environment: Environment, msg: Any, **_kw: Any) -> None:
            data = msg.data or {}
            lab.add(str(msg.node_id), [registration_from(r) for r in data.get("finished", [])],
                    int(data.get("in_flight", 0)))

        runner.register_message(MESSAGE, _from_worker)
    gevent.spawn(_gather, environment, lab, local)


def _gather(environment: Environment, lab: Lab,
            local: Callable[[], tuple[list[Registration], int]] | None) -> None:
    """Every 2 s while a test runs (and until its last sign-ups are in after it stops): take
    in this process's finished sign-ups and compute the figures."""
    settled = 0
    while True:
        gevent.sleep(PERIOD_S)
        runner = environment.runner
        if runner is None:
            continue
        if local is not None:
            finished, in_flight = local()
            lab.add("local", finished, in_flight)
        idle = runner.state in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP)
        if idle and lab.window.stopped_at is None and lab.last:
            lab.stopped()
        # Once stopped: until nothing can deliver any more (the bench's drain), twice more.
        settled = settled + 1 if idle and lab.last.get("drained") else 0
        if lab.last and idle and settled > 2:
            continue
        if idle and not lab.last:
            continue  # no test yet
        try:
            lab.figures()
        except Exception:  # the tab must not stop the test; the reason is logged
            LOG.exception("lab: the figures could not be computed")


def install_worker(environment: Environment,
                   local: Callable[[], tuple[list[Registration], int]]) -> None:
    """A worker sends its finished sign-ups and its count in flight to the master every 2 s
    while it runs users (and when its test stops)."""
    runner = environment.runner
    assert isinstance(runner, WorkerRunner)

    def _send() -> None:
        told = 0  # the count in flight the master last heard
        while True:
            gevent.sleep(PERIOD_S)
            finished, in_flight = local()
            if finished or in_flight != told:
                runner.send_message(MESSAGE, {
                    "finished": [registration_json(r) for r in finished],
                    "in_flight": in_flight})
                told = in_flight

    gevent.spawn(_send)
