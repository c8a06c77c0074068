"""The user store: SQLAlchemy models and one engine per app.

SQLite (the default) runs in WAL mode with a busy timeout, so gunicorn's threads and workers
can read while one writes; any other SQLAlchemy URL (PostgreSQL) is used as given.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, g
from sqlalchemy import Executable, Float, Integer, String, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from apps.core.config import ConfigError, private_file


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    verified_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)


class ResendLog(Base):
    """When a verification email was last re-sent to an address, known or not."""

    __tablename__ = "resend_log"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    last_sent_at: Mapped[float] = mapped_column(Float)


class MailQuota(Base):
    """How many emails an address was sent in its current window, known or not."""

    __tablename__ = "mail_quota"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    window_start: Mapped[float] = mapped_column(Float)
    sent: Mapped[int] = mapped_column(Integer)


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session]


def init_app(app: Flask) -> Database:
    """Open the store and create its tables; a URL that cannot be used raises ConfigError
    naming MAILLAB_DATABASE_URL (with any password hidden), before the app serves anything."""
    url = app.config["DATABASE_URL"]
    name = "MAILLAB_DATABASE_URL"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{name} is not a database URL (e.g. sqlite:///path or "
                          "postgresql+psycopg://user@host/db)") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                private_file(Path(parsed.database))
            engine = create_engine(parsed, connect_args={"check_same_thread": False,
                                                         "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
        _create_tables(engine)
    except NoSuchModuleError as exc:
        raise ConfigError(f"{name} {shown}: no driver for it ({exc}); the postgres extra "
                          "installs psycopg") from None
    except (OSError, SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{name} {shown}: cannot open the database: "
                          f"{str(reason).strip().splitlines()[0]}") from None
    database = Database(engine, sessionmaker(engine, expire_on_commit=False))
    app.extensions["maillab.db"] = database
    app.teardown_appcontext(_close_session)
    return database


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables, tolerating another process doing the same at the same moment.

    ``maillab serve`` and ``maillab worker`` started together both create the tables of a new
    database; the loser's CREATE fails with "already exists", and a retry finds them there.
    """
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if "already exists" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def dialect_insert(db_session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """The store's own INSERT for ``model``, which has ON CONFLICT (SQLAlchemy spells it per
    dialect; both stores the lab runs on, SQLite and PostgreSQL, have it)."""
    if db_session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def upsert_user(db_session: Session, email: str, password_hash: str,
                created_at: float) -> Executable:
    """INSERT the account, or, if the address has one, an UPDATE that changes nothing: one
    write either way."""
    insert = dialect_insert(db_session, User).values(
        email=email, password_hash=password_hash, created_at=created_at)
    return insert.on_conflict_do_update(index_elements=[User.email],
                                        set_={"email": insert.excluded.email})


def session() -> Session:
    """The session of the current app context, opened on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["maillab.db"].sessions()
    db_session: Session = g.db_session
    return db_session


def _close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _enable_wal(cursor, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """WAL is a property of the file, set once. Switching a new file to it upgrades a read lock
    to a write lock, which fails at once, busy timeout or not, when another process (serve and
    worker starting together) holds the file; so retry until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
