"""A tiny third-party shop using Flask-Security-Too's register + confirm flow.

Everything comes from the library unmodified: the /register and /confirm/<token>
views, their forms and the welcome / confirmation email templates. The only
app code is configuration, the models, two small routes (/welcome, /healthz) and
an optional threaded ``MailUtil``.

Configuration is environment only (``app.config.from_prefixed_env()``, prefix
``FLASK_``; values are parsed as JSON when they parse, so ``FLASK_MAIL_PORT=2525``
is an int and ``FLASK_MAIL_USE_TLS=true`` a bool). ``SHOP_MAIL`` picks how mail
is sent: ``inline`` (default, the library's own ``MailUtil``: SMTP inside the
request) or ``thread`` (one ``threading.Thread`` per email).

Run: ``gunicorn 'shop:create_app()'`` from this directory (see README.md).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from datetime import timedelta

from flask import Flask, current_app
from flask_mail import Mail
from flask_security import MailUtil, Security, SQLAlchemyUserDatastore
from flask_security.models import fsqla_v3 as fsqla
from flask_sqlalchemy import SQLAlchemy
from passlib.hash import sha256_crypt
from sqlalchemy.exc import OperationalError, ProgrammingError

log = logging.getLogger("shop")

db = SQLAlchemy()
mail = Mail()

fsqla.FsModels.set_db_info(db)


class Role(db.Model, fsqla.FsRoleMixin):
    pass


class User(db.Model, fsqla.FsUserMixin):
    pass


class ThreadMailUtil(MailUtil):
    """Send each email from its own ``threading.Thread``.

    The library renders the templates in the request (``flask_security.utils.
    send_mail``) and then calls ``MailUtil.send_mail``; only the SMTP
    conversation moves to the thread, which pushes its own app context because
    Flask-Mail reads ``current_app``. No retry: a failure is logged and the
    email is lost (as it is on a worker restart while the thread runs).
    """

    def send_mail(self, template, subject, recipient, sender, body, html, **kwargs):
        app = current_app._get_current_object()
        # Force lazy strings now, while the request context (locale) exists.
        subject = str(subject)
        if isinstance(sender, tuple) and len(sender) == 2:
            sender = (str(sender[0]), str(sender[1]))
        else:
            sender = str(sender)
        parent = super()

        def run():
            with app.app_context():
                try:
                    # kwargs (template context, including the ORM user) are
                    # passed through; the base class does not read them.
                    parent.send_mail(
                        template, subject, recipient, sender, body, html, **kwargs
                    )
                except Exception:
                    log.exception("shop: sending %r to %s failed", template, recipient)

        threading.Thread(target=run, name=f"mail-{template}").start()


MAIL_UTILS = {"inline": MailUtil, "thread": ThreadMailUtil}


def _timedelta(value):
    """'365 days' / '12 hours' / a number of seconds -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    amount, unit = str(value).split()
    return timedelta(**{unit: int(amount)})


def _create_tables(app):
    """db.create_all() that is safe when several gunicorn workers start at once.

    An exclusive flock on a file in the instance folder serialises the workers
    on this host; the OperationalError/ProgrammingError "already exists" catch
    covers workers on another host sharing a database server.
    """
    lock_path = os.path.join(app.instance_path, "shop-init.lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with app.app_context():
                try:
                    db.create_all()
                except (OperationalError, ProgrammingError) as exc:
                    if "already exists" not in str(exc):
                        raise
                if db.engine.dialect.name == "sqlite":
                    # WAL lets readers and the writer overlap; it is a property
                    # of the file, so setting it once (under the lock) is enough.
                    with db.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def create_app():
    app = Flask(__name__)
    os.makedirs(app.instance_path, exist_ok=True)

    # Defaults first; any FLASK_<KEY> environment variable overrides them.
    app.config.update(
        # Fixed (not random) so that every gunicorn worker signs the same
        # sessions and confirmation tokens. Override for anything real.
        SECRET_KEY="maillab-flask-security-example-secret",
        SQLALCHEMY_DATABASE_URI="sqlite:///"
        + os.path.join(app.instance_path, "shop.db"),
        SQLALCHEMY_ENGINE_OPTIONS={},
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=25,
        MAIL_USE_TLS=False,
        MAIL_USE_SSL=False,
        MAIL_USERNAME=None,
        MAIL_PASSWORD=None,
        MAIL_DEFAULT_SENDER="shop@example.com",
        SECURITY_PASSWORD_SALT="maillab-flask-security-example-salt",
        SECURITY_REGISTERABLE=True,
        SECURITY_CONFIRMABLE=True,
        SECURITY_SEND_REGISTER_EMAIL=True,
        SECURITY_LOGIN_WITHOUT_CONFIRMATION=False,
        SECURITY_CONFIRM_EMAIL_WITHIN=timedelta(days=365),
        SECURITY_POST_REGISTER_VIEW="/welcome",
        SECURITY_POST_CONFIRM_VIEW="/welcome",
        SECURITY_EMAIL_VALIDATOR_ARGS={"check_deliverability": False},
        # The library default (argon2) needs argon2-cffi and costs tens of ms
        # of CPU per sign-up; a load test of email sending should not measure
        # password hashing. pbkdf2_sha512 at 1000 rounds: ~0.4 ms.
        SECURITY_PASSWORD_HASH="pbkdf2_sha512",
        SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS={"pbkdf2_sha512__rounds": 1000},
        # The confirmation token carries hash_data(user.email), made (register)
        # and checked (confirm) with SECURITY_HASHING_SCHEMES; the library
        # default sha256_crypt at 535000 rounds costs ~250 ms of CPU each time.
        # Same scheme at 5000 rounds (~2 ms); tokens made with more rounds still
        # verify. FLASK_SECURITY_HASHING_SCHEMES='["sha256_crypt", "hex_md5"]'
        # restores the library default.
        SECURITY_HASHING_SCHEMES=[sha256_crypt.using(rounds=5000), "hex_md5"],
    )
    app.config.from_prefixed_env()  # prefix FLASK_

    # JSON parsing turns FLASK_MAIL_PASSWORD=1234 into an int; these are strings.
    for key in ("SECRET_KEY", "SECURITY_PASSWORD_SALT", "MAIL_USERNAME", "MAIL_PASSWORD"):
        if app.config.get(key) is not None and not isinstance(app.config[key], str):
            app.config[key] = str(app.config[key])
    # An env var can only give a string ("365 days"); the library wants a
    # timedelta (strings are deprecated since 5.9 and warn).
    app.config["SECURITY_CONFIRM_EMAIL_WITHIN"] = _timedelta(
        app.config["SECURITY_CONFIRM_EMAIL_WITHIN"]
    )
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # Wait up to 30 s for SQLite's write lock (pysqlite's default is 5 s).
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].setdefault(
            "connect_args", {"timeout": 30}
        )

    mode = os.environ.get("SHOP_MAIL", "inline").strip().lower() or "inline"
    if mode not in MAIL_UTILS:
        raise ValueError(f"SHOP_MAIL must be one of {sorted(MAIL_UTILS)}, not {mode!r}")
    app.config["SHOP_MAIL"] = mode

    db.init_app(app)
    mail.init_app(app)
    # mail_util_cls must go to the constructor: Security.init_app() silently
    # ignores it (its **kwargs only take form names and feature flags).
    Security(app, SQLAlchemyUserDatastore(db, User, Role), mail_util_cls=MAIL_UTILS[mode])
    assert type(app.extensions["security"].mail_util) is MAIL_UTILS[mode]

    @app.get("/welcome")
    def welcome():
        return "welcome\n"

    @app.get("/healthz")
    def healthz():
        return "ok"

    _create_tables(app)
    return app
