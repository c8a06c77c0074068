"""The HTTP contract shared by every variant: register, verify, resend, health, metrics."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from apps.core import db, emails, metrics, quota, tokens
from apps.core.db import ResendLog, User
from apps.core.mailer import DeliveryError, Email, Mailer, TransientDeliveryError
from apps.core.responses import Problem, respond, wants_json
from apps.core.validation import registration, resend_address

log = logging.getLogger(__name__)

bp = Blueprint("core", __name__)

PENDING = (
    "Thanks. If the address can receive email, a message with a confirmation link is on its "
    "way. Open it to finish signing up."
)


def mailer() -> Mailer:
    found: Mailer = current_app.extensions["mailer"]
    return found


@bp.get("/")
def index() -> ResponseReturnValue:
    return redirect(url_for("core.register_form"))


@bp.get("/register")
def register_form() -> ResponseReturnValue:
    cfg = current_app.config
    return render_template("register.html", email_max=cfg["EMAIL_MAX_LENGTH"],
                           password_min=cfg["PASSWORD_MIN_LENGTH"],
                           password_max=cfg["PASSWORD_MAX_LENGTH"])


@bp.post("/register")
def register() -> ResponseReturnValue:
    form = registration()
    # Hash before looking the address up: skipping the (deliberately slow) hash for known
    # addresses would let response time reveal which accounts exist.
    password_hash = generate_password_hash(form.password,
                                           method=current_app.config["PASSWORD_HASH"])
    session = db.session()
    now = time.time()
    # One statement whether or not the address has an account (an upsert whose update changes
    # nothing), so a known address costs the store the same write as a new one and the time
    # taken does not tell them apart; concurrent sign-ups of one address are safe too.
    session.execute(db.upsert_user(session, form.email, password_hash, now))
    user = session.scalars(select(User).where(User.email == form.email)).one()
    # The hash is salted, so only the insert this request made stored this very hash.
    created = user.password_hash == password_hash
    # One transaction: the account, the count of emails to its address and, for a variant
    # that keeps its email in the store (the outbox), the email itself commit together.
    allowed = _take_quota(session, form.email, now)
    if created:
        email = emails.verification_email(user.email, _verify_link(user.id, user.email), _hours())
    else:
        link = None if user.verified_at is not None else _verify_link(user.id, user.email)
        email = emails.already_registered_email(user.email, link, _hours())
    # Over the address's quota the answer is the same, and no email goes out.
    if allowed:
        _stage(session, email)
    session.commit()
    if allowed:
        _dispatch(email)
    if wants_json():
        return respond(202, "pending", "Check your email", PENDING)
    return redirect(url_for("core.register_sent"), code=303)


@bp.get("/register/sent")
def register_sent() -> ResponseReturnValue:
    return respond(200, "pending", "Check your email", PENDING)


@bp.get("/verify/<token>")
def verify(token: str) -> ResponseReturnValue:
    cfg = current_app.config
    check = tokens.check_token(cfg["SECRET_KEY"], token, cfg["TOKEN_MAX_AGE"])
    if check.state is tokens.TokenState.EXPIRED:
        raise Problem(410, "expired", "This confirmation link has expired. Ask for a new one.")
    if check.state is tokens.TokenState.INVALID:
        raise Problem(400, "invalid_token", "This confirmation link is not valid.")
    session = db.session()
    # One conditional UPDATE makes the token single-use even when two clicks race.
    result = session.execute(
        update(User)
        .where(User.id == check.user_id, User.email == check.email, User.verified_at.is_(None))
        .values(verified_at=time.time())
    )
    session.commit()
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return respond(200, "verified", "Email confirmed", "Your email address is confirmed.",
                       email=check.email)
    user = session.get(User, check.user_id)
    if user is None or user.email != check.email:
        raise Problem(400, "invalid_token", "This confirmation link does not match an account.")
    raise Problem(409, "already_used", "This confirmation link was already used.")


@bp.post("/resend")
def resend() -> ResponseReturnValue:
    address = resend_address()
    cooldown = current_app.config["RESEND_COOLDOWN"]
    session = db.session()
    now = time.time()
    entry = session.get(ResendLog, address)
    if entry is not None and now - entry.last_sent_at < cooldown:
        wait = max(1, math.ceil(cooldown - (now - entry.last_sent_at)))
        raise Problem(429, "cooldown", f"An email was sent to this address recently. "
                      f"Try again in {wait} s.", "email", headers={"Retry-After": str(wait)})
    if entry is None:
        session.add(ResendLog(email=address, last_sent_at=now))
    else:
        entry.last_sent_at = now
    allowed = _take_quota(session, address, now)
    # Every address gets the same answer and one email (a link, "already confirmed", or "no
    # account here"), so neither the answer nor the time to send it tells which accounts
    # exist; the per-address quota bounds what a stranger can send. The work is the same too:
    # plain columns rather than an ORM object, and a link signed whatever the outcome.
    found = session.execute(select(User.id, User.verified_at)
                            .where(User.email == address)).first()
    link = _verify_link(found.id if found else 0, address)
    if found is None:
        email = emails.no_account_email(address, _public("core.register_form"))
    elif found.verified_at is None:
        email = emails.verification_email(address, link, _hours())
    else:
        email = emails.already_registered_email(address, None, _hours())
    if allowed:
        _stage(session, email)
    try:
        session.commit()
    except IntegrityError:  # a concurrent resend for the same address won
        session.rollback()
        raise Problem(429, "cooldown", "An email was sent to this address just now.", "email",
                      headers={"Retry-After": str(max(1, math.ceil(cooldown)))}) from None
    if allowed:
        _dispatch(email)
    return respond(202, "pending", "Check your email", PENDING)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    db.session().execute(select(1))
    return {"status": "ok", "variant": mailer().name}


@bp.after_request
def _count_registration(response: Response) -> Response:
    """Every POST /register answered, by status, in the app's metrics (every worker's, summed
    by a scrape): what the load generator's count of its requests is checked against."""
    if request.method == "POST" and request.endpoint == "core.register":
        kept = metrics.app_metrics(mailer())
        if kept is not None:
            kept.registered(response.status_code)
    return response


@bp.get("/metrics")
def prometheus() -> ResponseReturnValue:
    body, content_type = metrics.render(current_app.extensions["maillab.metrics"])
    return body, 200, {"Content-Type": content_type}


def _stage(session: Session, email: Email) -> None:
    """A variant that keeps its email in the store (``stage``, the outbox) writes it in the
    request's transaction, before the commit; the others have nothing to do here."""
    stage = getattr(mailer(), "stage", None)
    if stage is not None:
        stage(session, email)


def _dispatch(email: Email) -> None:
    try:
        mailer().dispatch(email)
    except DeliveryError as exc:
        if not exc.logged:
            log.warning("delivery of %s failed: %s", email.id, exc)
        if isinstance(exc, TransientDeliveryError):
            raise Problem(503, "delivery_failed", "Your account is saved, but the confirmation "
                          "email could not be sent right now. Try again in a minute.",
                          headers={"Retry-After": "60"}) from None
        raise Problem(502, "delivery_failed", "Your account is saved, but the mail server "
                      "refused the confirmation email.") from None


def _take_quota(session: Session, address: str, now: float) -> bool:
    cfg = current_app.config
    return quota.take(session, address, now, cfg["EMAILS_PER_ADDRESS"],
                      cfg["EMAIL_WINDOW"])


def _public(endpoint: str, **values: Any) -> str:
    """An absolute link for an email: MAILLAB_PUBLIC_URL, never the request's Host header,
    which the client chooses (a link to an attacker's host would carry the token there)."""
    return current_app.config["PUBLIC_URL"] + url_for(endpoint, **values)


def _verify_link(user_id: int, email: str) -> str:
    token = tokens.make_token(current_app.config["SECRET_KEY"], user_id, email)
    return _public("core.verify", token=token)


def _hours() -> float:
    hours: float = current_app.config["TOKEN_MAX_AGE"] / 3600
    return hours
