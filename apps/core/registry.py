"""The one registry of variants: name -> what implements it and what it is like.

Classes are imported only when chosen, so a variant's optional backend (Redis for
``queued``) is needed only by those who pick it. A variant's properties (does it send email,
what process delivers it, one line about it) live here and are asked here, nowhere else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from apps.core.mailer import Mailer


@dataclass(frozen=True)
class Variant:
    mailer: str                 # "module:Class" of its Mailer
    summary: str                # where deliver() runs, in a few words
    sends_email: bool = True    # False: the floor, nothing to deliver or wait for
    consumer: str | None = None  # the maillab command that delivers its email, if not the app
    # What the lab's runner adds when it starts the consumer, as a process manager would
    # (beyond --threads and --metrics-port).
    consumer_args: tuple[str, ...] = ()


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("apps.baseline.mailer:BaselineMailer",
                        "sends nothing: the floor every variant is measured against",
                        sends_email=False),
    "sync": Variant("apps.sync.mailer:SyncMailer", "delivers inside the request"),
    "threaded": Variant("apps.threaded.mailer:ThreadedMailer",
                        "one threading.Thread per email (the seeds' fix)"),
    "queued": Variant("apps.queued.mailer:QueuedMailer",
                      "a Huey task, delivered by maillab worker", consumer="worker"),
    "outbox": Variant("apps.outbox.mailer:OutboxMailer",
                      "a row written in the sign-up's own transaction, delivered by maillab "
                      "relay (the transactional outbox)", consumer="relay",
                      # A stable name, as a unit's: restarted, it takes back its rows at once.
                      consumer_args=("--name", "maillab-relay")),
}


class UnknownVariantError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
        self.name = name


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownVariantError(name) from None


def sends_email(name: str) -> bool:
    """Whether the variant delivers email at all; a name the registry does not know (another
    app under load) is assumed to."""
    found = VARIANTS.get(name)
    return found.sends_email if found is not None else True


def mailer_class(name: str) -> Any:
    module_name, _, attr = variant(name).mailer.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def create_mailer(name: str, app: Flask) -> Mailer:
    """Build the named variant's Mailer for ``app``."""
    mailer: Mailer = mailer_class(name)(app)
    return mailer
