"""``deliver(email)``: the one place that speaks SMTP.

It goes through Flask-Mail, with two changes. Flask-Mail opens ``smtplib.SMTP`` without a
timeout, so a server that never answers would hold the caller (a request, in the sync
variant) for as long as the OS keeps the socket: here every connection gets
``MAILLAB_SMTP_TIMEOUT``. And its STARTTLS passes no context, so smtplib checks no
certificate at all: here the handshake verifies the server's certificate and host name,
against the system's CAs or ``MAILLAB_SMTP_CA_FILE``. Failures are raised as transient or
permanent by SMTP reply class.
"""

from __future__ import annotations

import logging
import smtplib
import ssl

from flask import Flask, current_app
from flask_mail import Connection, Mail, Message

from apps.core.mailer import Email, PermanentDeliveryError, TransientDeliveryError
from apps.core.validation import unsendable

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Maillab-Id"


def init_app(app: Flask) -> None:
    """Map maillab's SMTP settings onto Flask-Mail's and register it."""
    app.config.update(
        MAIL_SERVER=app.config["SMTP_HOST"],
        MAIL_PORT=app.config["SMTP_PORT"],
        MAIL_USE_TLS=app.config["SMTP_USE_TLS"],
        MAIL_USERNAME=app.config["SMTP_USERNAME"],
        MAIL_PASSWORD=app.config["SMTP_PASSWORD"],
        MAIL_DEFAULT_SENDER=app.config["MAIL_SENDER"],
        # Flask-Mail suppresses sending whenever TESTING is on; maillab's tests need real SMTP.
        MAIL_SUPPRESS_SEND=False,
    )
    Mail(app)


class TimeoutConnection(Connection):
    """A Flask-Mail connection whose socket has a timeout, and whose STARTTLS verifies."""

    def __init__(self, mail: Mail, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(mail)
        self.timeout = timeout
        self.tls = tls

    def configure_host(self) -> smtplib.SMTP:
        host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=self.timeout)
        try:
            if self.mail.use_tls:
                host.starttls(context=self.tls or ssl.create_default_context())
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()  # not left open for the garbage collector
            raise
        return host


def to_message(email: Email) -> Message:
    message = Message(
        subject=email.subject,
        recipients=[email.to],
        body=email.text,
        html=email.html,
        extra_headers={CORRELATION_HEADER: email.id},
    )
    # Stable across tries: a message sent twice (a retry after a dropped reply, a relay that
    # died before marking it sent) carries one Message-ID, so a receiver can tell.
    message.msgId = message_id(email)
    return message


def message_id(email: Email) -> str:
    return f"<{email.id}@maillab.invalid>"


def deliver(email: Email) -> None:
    """Send ``email`` over SMTP now. Needs an app context.

    Raises :class:`TransientDeliveryError` for 4xx replies, timeouts and dropped or refused
    connections, and :class:`PermanentDeliveryError` for 5xx replies and for a recipient no
    SMTP envelope can carry (see :func:`apps.core.validation.unsendable`).
    """
    reason = unsendable(email.to)
    if reason is not None:
        raise PermanentDeliveryError(f"recipient {email.to!r} {reason}")
    message = to_message(email)
    connection = TimeoutConnection(current_app.extensions["mail"],
                                   current_app.config["SMTP_TIMEOUT"],
                                   current_app.config["SMTP_TLS_CONTEXT"])
    try:
        connection.host = connection.configure_host()
        try:
            connection.send(message)
        finally:
            _close(connection.host)
    except Exception as exc:
        error = classify(exc)
        if error is None:
            raise
        raise error from exc


def classify(exc: BaseException) -> TransientDeliveryError | PermanentDeliveryError | None:
    """The delivery error for an smtplib or socket failure; None for anything else (a bug)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        worst = max(codes) if codes else 550
        return _by_code(worst, f"recipient refused: {exc.recipients}")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        return _by_code(exc.smtp_code, f"{exc.smtp_code} {text}")
    if isinstance(exc, smtplib.SMTPNotSupportedError | UnicodeEncodeError):
        # The message needs something the server or the protocol cannot carry (SMTPUTF8):
        # sending it again cannot help.
        return PermanentDeliveryError(f"cannot be sent: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        # The server's certificate is not trusted (or not for this host): sending again
        # meets the same certificate.
        return PermanentDeliveryError(f"the SMTP server's certificate was refused: "
                                      f"{exc.verify_message or exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientDeliveryError(f"server disconnected: {exc}")
    if isinstance(exc, TimeoutError):
        return TransientDeliveryError(f"SMTP timed out: {exc}")
    if isinstance(exc, OSError):  # refused, reset, unreachable
        return TransientDeliveryError(f"SMTP connection failed: {exc}")
    return None


def _by_code(code: int, message: str) -> TransientDeliveryError | PermanentDeliveryError:
    if 400 <= code < 500:
        return TransientDeliveryError(message, code)
    return PermanentDeliveryError(message, code)


def _close(host: smtplib.SMTP | None) -> None:
    """QUIT politely; a server that already hung up must not mask the real outcome."""
    if host is None:
        return
    try:
        host.quit()
    except (smtplib.SMTPException, OSError):
        host.close()
