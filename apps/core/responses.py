"""HTML or JSON, negotiated from ``Accept``, and the one error type views raise."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException


class Problem(Exception):
    """An error the client should see: an HTTP status, a code, a message, maybe a field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def wants_json() -> bool:
    """JSON when ``Accept`` prefers it, or when it states no preference and the body was JSON."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best is None or request.accept_mimetypes.provided is False:
        return request.is_json
    if best == "application/json":
        return True
    # "*/*" ranks both equally and best_match picks the first; let a JSON body decide.
    html_q = request.accept_mimetypes["text/html"]
    json_q = request.accept_mimetypes["application/json"]
    return html_q == json_q and request.is_json


def respond(
    status: int,
    code: str,
    title: str,
    message: str,
    *,
    template: str = "message.html",
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ResponseReturnValue:
    if wants_json():
        body: dict[str, Any] = {"status": code, "message": message, **extra}
        if field:
            body["field"] = field
        return jsonify(body), status, headers or {}
    html = render_template(template, status=status, title=title, message=message, field=field,
                           **extra)
    return html, status, headers or {}


TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    409: "Already used",
    410: "Expired",
    413: "Request too large",
    415: "Unsupported content type",
    422: "Invalid input",
    429: "Too many requests",
    502: "Email could not be sent",
    503: "Email could not be sent yet",
}


def init_app(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> ResponseReturnValue:
        return respond(problem.status, problem.code, TITLES.get(problem.status, "Error"),
                       problem.message, field=problem.field, headers=problem.headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = dict(exc.get_headers())
        headers.pop("Content-Type", None)
        return respond(status, code, exc.name or "Error", exc.description or exc.name or "",
                       headers=headers)
