"""A small Flask sign-up (not maillab's): POST /register sends a verification email with
Flask-Mailman, retrying a temporary failure (a 4xx, a dropped or timed-out connection) up to
three times; GET /verify/<token> confirms the address. Its own tests (tests/) prove the email
with fakesmtp's pytest plugin only."""

from __future__ import annotations

import secrets
import smtplib
import socket
import time
from typing import Any

from flask import Flask, abort, request, url_for
from flask_mailman import EmailMessage, Mail
from itsdangerous import BadSignature, URLSafeTimedSerializer

TRIES = 3


def temporary(exc: Exception) -> bool:
    """A failure worth another try: a 4xx reply, or a connection that went or timed out."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout,
                            TimeoutError))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="example-only", MAIL_DEFAULT_SENDER="shop@example.test",
                      MAIL_TIMEOUT=5, RETRY_DELAY_S=0.05)
    app.config.update(config or {})
    mail = Mail(app)
    tokens = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="verify")
    verified: set[str] = set()

    def send(address: str) -> None:
        link = url_for("verify", token=tokens.dumps(address), _external=True)
        # One Message-ID for every try: a receiver can tell a retry from a new email.
        message_id = f"<{secrets.token_hex(12)}@example.test>"
        for attempt in range(1, TRIES + 1):
            # A new message (and so a new connection) per try: a message keeps the
            # connection it failed on.
            message = EmailMessage("Confirm your address", f"Confirm it here: {link}\n",
                                   to=[address], headers={"Message-ID": message_id})
            try:
                message.send()
                return
            except (smtplib.SMTPException, OSError) as exc:
                if attempt == TRIES or not temporary(exc):
                    raise
                time.sleep(app.config["RETRY_DELAY_S"] * attempt)

    @app.post("/register")
    def register() -> tuple[str, int]:
        address = (request.form.get("email") or "").strip().lower()
        if "@" not in address:
            return "email: give an address", 400
        try:
            send(address)
        except (smtplib.SMTPException, OSError):
            return "we could not send the email; try again later", 503
        return "check your email", 202

    @app.get("/verify/<token>")
    def verify(token: str) -> str:
        try:
            address = tokens.loads(token, max_age=3600)
        except BadSignature:
            abort(400)
        verified.add(address)
        return f"{address} is verified"

    app.extensions["verified"] = verified
    mail.init_app(app)
    return app
