"""The built-in variants' code: name -> the Mailer class that implements it.

Classes are imported only when chosen, so a variant's optional backend (Redis for
``queued``, Celery for ``celery``) is needed only by those who pick it. What each variant is
like for the lab (does it send email, what process delivers it, one line about it) is said in
the lab's target file, ``apps/target.toml`` (read by :mod:`loadtests.target`), nowhere else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from apps.core.mailer import Mailer

VARIANTS: dict[str, str] = {
    "baseline": "apps.baseline.mailer:BaselineMailer",
    "sync": "apps.sync.mailer:SyncMailer",
    "threaded": "apps.threaded.mailer:ThreadedMailer",
    "queued": "apps.queued.mailer:QueuedMailer",
    "outbox": "apps.outbox.mailer:OutboxMailer",
    "celery": "apps.celery.mailer:CeleryMailer",
}


class UnknownVariantError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
        self.name = name


def mailer_class(name: str) -> Any:
    try:
        module_name, _, attr = VARIANTS[name].partition(":")
    except KeyError:
        raise UnknownVariantError(name) from None
    return getattr(importlib.import_module(module_name), attr)


def create_mailer(name: str, app: Flask) -> Mailer:
    """Build the named variant's Mailer for ``app``."""
    mailer: Mailer = mailer_class(name)(app)
    return mailer
