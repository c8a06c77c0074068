"""Composing the two emails the flow sends, as plain :class:`Email` values."""

from __future__ import annotations

import uuid

from flask import render_template

from apps.core.mailer import Email

VERIFY_SUBJECT = "Confirm your email address"
ALREADY_SUBJECT = "You already have an account"
NO_ACCOUNT_SUBJECT = "No account uses this address"


def new_id() -> str:
    return uuid.uuid4().hex


def verification_email(to: str, link: str, max_age_hours: float) -> Email:
    return _compose(to, VERIFY_SUBJECT, "verify", link, max_age_hours)


def already_registered_email(to: str, link: str | None, max_age_hours: float) -> Email:
    """Sent when someone registers an address that has an account.

    An unverified account gets a fresh verification link, so a person who lost the first
    email can simply register again; a verified one is told to sign in.
    """
    return _compose(to, ALREADY_SUBJECT, "already", link, max_age_hours)


def no_account_email(to: str, signup_link: str) -> Email:
    """Sent when someone asks to re-send a confirmation to an address with no account: the
    same single email a known address gets, so the answer reveals nothing."""
    return _compose(to, NO_ACCOUNT_SUBJECT, "no_account", signup_link, 0)


def _compose(to: str, subject: str, template: str, link: str | None, hours: float) -> Email:
    context = {"link": link, "hours": hours}
    return Email(
        id=new_id(),
        to=to,
        subject=subject,
        text=render_template(f"email/{template}.txt", **context),
        html=render_template(f"email/{template}.html", **context),
    )
