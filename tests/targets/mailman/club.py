"""Book club sign-up: a small, ordinary Flask app.

Flask-WTF for the forms (CSRF), Flask-Mailman for the confirmation mail,
sqlite3 from the standard library for storage.
"""
import logging
import os
import secrets
import sqlite3
import threading

from flask import Flask, abort, current_app, g, render_template, url_for
from flask_mailman import EmailMessage, Mail
from flask_wtf import FlaskForm
from jinja2 import DictLoader
from markupsafe import escape
from werkzeug.security import generate_password_hash
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Email, Length

mail = Mail()
log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS member (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    confirmed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    confirmed_at TEXT
)
"""


class JoinForm(FlaskForm):
    address = EmailField("Email address", validators=[DataRequired(), Email()])
    secret = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=128)])
    submit = SubmitField("Join")


class ConfirmForm(FlaskForm):
    submit = SubmitField("Confirm")


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Book club</title></head>
<body>
<h1>Book club</h1>
{% block body %}{% endblock %}
</body>
</html>
"""

JOIN_PAGE = """{% extends "base.html" %}{% block body %}
<h2>Join the book club</h2>
<form method="post" action="{{ url_for('join') }}">
  {{ form.hidden_tag() }}
  <p>{{ form.address.label }} {{ form.address(required=True) }}</p>
  {% for e in form.address.errors %}<p class="error">{{ e }}</p>{% endfor %}
  <p>{{ form.secret.label }} {{ form.secret(required=True) }}</p>
  {% for e in form.secret.errors %}<p class="error">{{ e }}</p>{% endfor %}
  {% for e in form.csrf_token.errors %}<p class="error">{{ e }}</p>{% endfor %}
  <p>{{ form.submit() }}</p>
</form>
{% endblock %}"""

INBOX_PAGE = """{% extends "base.html" %}{% block body %}
<h2>Check your inbox</h2>
<p>We sent you a link to confirm your membership.</p>
{% endblock %}"""

CONFIRM_PAGE = """{% extends "base.html" %}{% block body %}
<h2>Confirm your membership</h2>
<form method="post" action="{{ url_for('confirm', token=token) }}">
  {{ form.hidden_tag() }}
  {% for e in form.csrf_token.errors %}<p class="error">{{ e }}</p>{% endfor %}
  <p>{{ form.submit() }}</p>
</form>
{% endblock %}"""

CONFIRMED_PAGE = """{% extends "base.html" %}{% block body %}
<h2>Membership confirmed</h2>
<p>Welcome to the club!</p>
{% endblock %}"""


TEMPLATES = {
    "base.html": PAGE,
    "join.html": JOIN_PAGE,
    "inbox.html": INBOX_PAGE,
    "confirm.html": CONFIRM_PAGE,
    "confirmed.html": CONFIRMED_PAGE,
}


def get_db():
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"], timeout=30)
        g.db.row_factory = sqlite3.Row
    return g.db


def close_db(exc=None):
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db(path):
    db = sqlite3.connect(path, timeout=30)
    try:
        db.execute(SCHEMA)
        db.commit()
    finally:
        db.close()


def send_async(app, msg):
    with app.app_context():
        try:
            msg.send()
        except Exception:
            log.exception("sending confirmation mail to %s failed", msg.to)


def send_confirmation(address, token):
    link = url_for("confirm", token=token, _external=True)
    msg = EmailMessage(
        subject="Confirm your book club membership",
        body=(
            "<html><body>"
            "<p>Thanks for joining the book club!</p>"
            f'<p>Please confirm your membership: <a href="{escape(link)}">{escape(link)}</a></p>'
            "</body></html>"
        ),
        to=[address],
    )
    msg.content_subtype = "html"
    if current_app.config["SEND"] == "later":
        app = current_app._get_current_object()
        threading.Thread(target=send_async, args=(app, msg)).start()
    else:
        msg.send()


def create_app():
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="book-club-dev-secret",
        DATABASE=os.path.join(app.instance_path, "club.sqlite"),
        SEND="now",
        MAIL_SERVER="localhost",
        MAIL_PORT=25,
        MAIL_USE_TLS=False,
        MAIL_DEFAULT_SENDER="Book Club <club@example.com>",
    )
    app.config.from_prefixed_env("CLUB")
    app.jinja_loader = DictLoader(TEMPLATES)
    # from_prefixed_env json-decodes values, so an all-digit password arrives as an int
    for key in ("MAIL_USERNAME", "MAIL_PASSWORD"):
        if app.config.get(key) is not None:
            app.config[key] = str(app.config[key])

    if app.config["DATABASE"] == os.path.join(app.instance_path, "club.sqlite"):
        os.makedirs(app.instance_path, exist_ok=True)
    init_db(app.config["DATABASE"])

    mail.init_app(app)
    app.teardown_appcontext(close_db)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.route("/join", methods=["GET", "POST"])
    def join():
        form = JoinForm()
        if form.validate_on_submit():
            address = form.address.data.strip().lower()
            token = secrets.token_urlsafe(32)
            db = get_db()
            try:
                db.execute(
                    "INSERT INTO member (address, secret_hash, token) VALUES (?, ?, ?)",
                    (address, generate_password_hash(form.secret.data), token),
                )
                db.commit()
            except sqlite3.IntegrityError:
                # already registered: same answer, no mail
                db.rollback()
                return render_template("inbox.html")
            send_confirmation(address, token)
            return render_template("inbox.html")
        if form.is_submitted():
            return render_template("join.html", form=form), 400
        return render_template("join.html", form=form)

    @app.route("/confirm/<token>", methods=["GET", "POST"])
    def confirm(token):
        member = get_db().execute("SELECT id FROM member WHERE token = ?", (token,)).fetchone()
        if member is None:
            abort(404)
        form = ConfirmForm()
        if form.validate_on_submit():
            db = get_db()
            db.execute(
                "UPDATE member SET confirmed = 1, confirmed_at = CURRENT_TIMESTAMP"
                " WHERE id = ? AND confirmed = 0",
                (member["id"],),
            )
            db.commit()
            return render_template("confirmed.html")
        if form.is_submitted():
            return render_template("confirm.html", form=form, token=token), 400
        return render_template("confirm.html", form=form, token=token)

    return app
