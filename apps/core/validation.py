"""Reading and checking what a client submits, before anything touches the store.

Every failure is a :class:`Problem` with a 4xx status that names the field, so a bad body
never reaches a half-created user or a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from email_validator import EmailNotValidError, validate_email
from flask import current_app, request
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from apps.core.responses import Problem

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
JSON_TYPE = "application/json"
# Werkzeug decodes form bytes leniently, turning invalid UTF-8 into U+FFFD; seeing it means
# the client sent bytes that were not UTF-8 (or sent U+FFFD itself, which no address holds).
REPLACEMENT = "\ufffd"
# The body is a flat object; anything nested deeper than this is refused before parsing, so
# no input can drive the parser's recursion to its limit.
MAX_JSON_DEPTH = 8


@dataclass(frozen=True)
class Registration:
    email: str
    password: str


def read_payload() -> dict[str, Any]:
    """The submitted fields, from JSON (CSRF-exempt) or a form (CSRF-checked)."""
    mimetype = request.mimetype
    if mimetype == JSON_TYPE:
        raw = request.get_data(cache=True)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "bad_encoding", "The body is not valid UTF-8.", "body") from None
        if json_depth(text) > MAX_JSON_DEPTH:
            raise Problem(400, "bad_json", f"The JSON body is nested deeper than "
                          f"{MAX_JSON_DEPTH} levels.", "body")
        try:
            payload = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise Problem(400, "bad_json", f"The body is not valid JSON: {exc}", "body") from None
        if not isinstance(payload, dict):
            raise Problem(400, "bad_json", "The JSON body must be an object.", "body")
        return payload
    if mimetype == FORM_TYPES[0]:
        form = _strict_urlencoded(request.get_data(cache=True))
        _check_csrf(form.get("csrf_token"))
        return form
    if mimetype == FORM_TYPES[1]:
        form = request.form.to_dict()
        for name, value in form.items():
            if REPLACEMENT in value or REPLACEMENT in name:
                raise Problem(400, "bad_encoding", f"Field {name!r} is not valid UTF-8.", name)
        _check_csrf(form.get("csrf_token"))
        return form
    shown = mimetype or "none"
    raise Problem(415, "unsupported_media_type",
                  f"Content-Type must be {JSON_TYPE} or {FORM_TYPES[0]}, not {shown}.",
                  "Content-Type")


def json_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in ``text``, strings skipped: a linear scan that needs
    no recursion, so it is safe on any input (json.loads is not: it recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _strict_urlencoded(raw: bytes) -> dict[str, str]:
    """Decode a form body, refusing invalid UTF-8 in raw bytes and in %-escapes alike.

    Werkzeug keeps an undecodable escape such as ``%FF`` as literal text, which would then
    pass as a legal character in an address; here it is an error that names the field.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "bad_encoding", "The form is not valid UTF-8.", "body") from None
    form: dict[str, str] = {}
    for pair in filter(None, text.split("&")):
        name_part = pair.split("=", 1)[0]
        try:
            [(name, value)] = parse_qsl(pair, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            field = unquote_plus(name_part, errors="replace")
            raise Problem(400, "bad_encoding", f"Field {field!r} is not valid UTF-8.",
                          field) from None
        except ValueError:
            raise Problem(400, "bad_form", f"Malformed form field {name_part!r}.",
                          "body") from None
        form.setdefault(name, value)
    return form


def _check_csrf(token: Any) -> None:
    try:
        validate_csrf(token)
    except (ValidationError, CSRFError) as exc:
        raise Problem(400, "csrf", f"CSRF check failed: {exc}. Reload the form and try again.",
                      "csrf_token") from None


def text_field(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if value is None or value == "":
        raise Problem(422, "missing_field", f"{name} is required.", name)
    if not isinstance(value, str):
        raise Problem(422, "invalid_field", f"{name} must be a string.", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\ud800 escapes can carry
        raise Problem(422, "invalid_field", f"{name} contains a character that is not valid "
                      "Unicode (a lone surrogate).", name) from None
    return value


def check_email(raw: str) -> str:
    """The normalized address, or a Problem that says what is wrong with it."""
    limit = current_app.config["EMAIL_MAX_LENGTH"]
    if len(raw) > limit:
        raise Problem(422, "invalid_email", f"email is longer than {limit} characters.", "email")
    if "\r" in raw or "\n" in raw or "\x00" in raw:
        # The address ends up in a header: a line break there would inject headers.
        raise Problem(422, "invalid_email", "email must not contain CR, LF or NUL.", "email")
    try:
        checked = validate_email(
            raw.strip(),
            check_deliverability=False,
            test_environment=current_app.config["ALLOW_TEST_DOMAINS"],
            # The flow sends through servers that may not offer SMTPUTF8, so a non-ASCII
            # part before the @ is refused here rather than failing after the account exists.
            allow_smtputf8=False,
        )
    except EmailNotValidError as exc:
        raise Problem(422, "invalid_email", f"email is not valid: {exc}", "email") from None
    # The ASCII form (an internationalized domain as its IDNA 2008 A-label) is the one that
    # was validated, and the one stored and mailed: smtplib would otherwise re-encode the
    # domain under IDNA 2003, which maps some names (faß.test) to another domain.
    address = (checked.ascii_email or checked.normalized).lower()
    reason = unsendable(address)
    if reason is not None:
        raise Problem(422, "invalid_email", f"email {reason}.", "email")
    return address


def unsendable(address: str) -> str | None:
    """Why ``address`` cannot go in an SMTP envelope without SMTPUTF8, or None if it can.

    The one rule the flow and the mailer share: :func:`check_email` refuses what fails it
    before an account exists, and ``deliver()`` refuses it again (a permanent error, so no
    queue retries it) for anything that reached the mailer another way.
    """
    if not address.isascii():
        return "must be ASCII (this flow does not send with SMTPUTF8)"
    if any(ch in address for ch in "\r\n\x00") or any(ord(ch) < 32 for ch in address):
        return "must not contain control characters"
    if address.count("@") != 1 or address.startswith("@") or address.endswith("@"):
        return "must have one @ between a local part and a domain"
    return None


def check_password(password: str) -> str:
    low = current_app.config["PASSWORD_MIN_LENGTH"]
    high = current_app.config["PASSWORD_MAX_LENGTH"]
    if not low <= len(password) <= high:
        raise Problem(422, "invalid_password",
                      f"password must be {low} to {high} characters long.", "password")
    if "\x00" in password:
        raise Problem(422, "invalid_password", "password must not contain NUL.", "password")
    return password


def registration() -> Registration:
    payload = read_payload()
    email = check_email(text_field(payload, "email"))
    password = check_password(text_field(payload, "password"))
    return Registration(email, password)


def resend_address() -> str:
    return check_email(text_field(read_payload(), "email"))
