"""What goes wrong during a cell: the one list of scenarios and what each one does.

A scenario is a bench axis (``scenarios = [...]`` in a profile). ``clean`` is the healthy
run. The SMTP scenarios give fakesmtp fault rules for the whole cell (``faults``) or for a
window in its middle (``window_faults``), so every delivery the app attempts meets them
whatever the variant; fakesmtp's capture stays the ground truth of what arrived. The process
scenarios have the runner signal the app or the consumer in the middle of the cell and start
it again a few seconds later (``maillab.bench``); ``broker-restart`` does the same to the
run's queue server (``maillab.services``).

Beside the scenario, a cell has an SMTP mode (``smtp = [...]`` in a profile, :data:`SMTP_MODES`):
``plain`` SMTP, or ``starttls+auth``, fakesmtp as a provider's submission port (587): STARTTLS
and AUTH before every message, which the app's settings (``MAILLAB_SMTP_USE_TLS``, username,
password, ``MAILLAB_SMTP_CA_FILE``) meet.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from loadtests.target import variant_info

CLEAN = "clean"
BROKER_RESTART = "broker-restart"
PLAIN = "plain"
STARTTLS_AUTH = "starttls+auth"
SMTP_MODES: dict[str, str] = {
    PLAIN: "plain SMTP",
    STARTTLS_AUTH: "STARTTLS and AUTH",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one sentence for the report: what happens, in the person's terms
    faults: tuple[str, ...] = ()  # fakesmtp rules for the whole cell
    window_faults: tuple[str, ...] = ()  # fakesmtp rules for the middle third of the window
    needs_consumer: bool = False  # only variants with a consumer process run it
    needs_broker: bool = False  # only variants whose email waits in a broker run it
    # "app", "consumer" or "broker" (the server the variant's email waits in): signalled in
    # the middle of the window
    kill: str | None = None
    signal: int = signal.SIGKILL  # SIGKILL: a crash; SIGTERM: a graceful stop (a deploy)
    restart_after_s: float = 3.0  # then started again, as a process manager would
    # The signal goes to the process alone, not its group, and nothing is started again: the
    # process replaces its own workers (gunicorn's graceful reload on SIGHUP).
    in_place: bool = False

    def applies_to(self, variant: str) -> bool:
        """Whether ``variant`` runs this scenario: a variant that sends nothing (the
        baseline) has nothing to lose, so it runs only ``clean``."""
        if self.name == CLEAN:
            return True
        info = variant_info(variant)
        return (info.sends_email and (not self.needs_consumer or info.consumer is not None)
                and (not self.needs_broker or info.broker is not None))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(CLEAN, "Nothing goes wrong: the SMTP server answers every delivery."),
    Scenario("smtp-flaky", "The SMTP server answers 451 (try again later) to a fifth of the "
             "recipients: a sender that retries delivers them all.",
             faults=("id=flaky,phase=rcpt,reply=451,prob=0.2",)),
    Scenario("smtp-reject", "The SMTP server answers 550 (no such mailbox) to a tenth of the "
             "recipients: nobody can deliver those, and a retry does not help.",
             faults=("id=reject,phase=rcpt,reply=550,prob=0.1",)),
    Scenario("smtp-hang", "The SMTP server never answers a tenth of the messages, so the "
             "sender's SMTP timeout decides what happens to them.",
             faults=("id=hang,phase=eom,action=hang,prob=0.1",)),
    Scenario("smtp-drop", "The SMTP server stores a tenth of the messages but cuts the "
             "connection before saying so: a sender that retries sends them twice.",
             faults=("id=drop,phase=eom,action=drop,prob=0.1",)),
    Scenario("smtp-outage", "The SMTP server refuses every message (421) for the middle "
             "third of the cell, then recovers.",
             window_faults=("id=outage,phase=mail,reply=421",)),
    Scenario("app-crash", "The whole app is killed (SIGKILL) in the middle of the cell and "
             "started again 3 s later: whatever it held in memory is gone.", kill="app"),
    Scenario("app-deploy", "The app is stopped gracefully (SIGTERM) in the middle of the "
             "cell, as a deploy does, and started again 3 s later.", kill="app",
             signal=signal.SIGTERM),
    Scenario("app-reload", "The app is reloaded without downtime (SIGHUP to gunicorn) in the "
             "middle of the cell: new workers start, the old ones finish their requests "
             "within the graceful timeout and exit.", kill="app", signal=signal.SIGHUP,
             in_place=True),
    Scenario("consumer-crash", "The process that delivers the email (queued's Huey consumer, "
             "outbox's relay, Celery's worker) is killed (SIGKILL) in the middle of the cell "
             "and started again 3 s later: whatever it was sending is cut off.",
             kill="consumer", needs_consumer=True),
    Scenario("consumer-deploy", "The process that delivers the email is stopped gracefully "
             "(SIGINT: Huey's graceful stop, whose SIGTERM stops at once; the relay's and "
             "Celery's warm shutdown too) in the middle of the cell and started again 3 s "
             "later.", kill="consumer", signal=signal.SIGINT, needs_consumer=True),
    Scenario(BROKER_RESTART, "The server the email waits in (Redis or RabbitMQ) is stopped "
             "(SIGTERM, its own clean shutdown, which keeps what it stores on disk) in the "
             "middle of the cell and started again 3 s later: sign-ups meanwhile cannot hand "
             "their email over, and what the consumer was running cannot be acknowledged.",
             kill="broker", signal=signal.SIGTERM, needs_broker=True),
)}


def smtp_mode_for(variant: str, mode: str) -> str:
    """The SMTP mode ``variant`` runs on when the grid asks for ``mode``: a variant that sends
    nothing (the baseline) meets no SMTP server, so it runs on plain SMTP only, and its plain
    cell is its figure for every mode."""
    return mode if variant_info(variant).sends_email else PLAIN


class ScenarioError(ValueError):
    pass


def scenario(name: str) -> Scenario:
    found = SCENARIOS.get(name)
    if found is None:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return found
