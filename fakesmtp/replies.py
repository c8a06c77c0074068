"""Named SMTP replies (in the style of aiosmtpd's ``testing/statuscodes.py``).

Texts hold no comma, so a rule string can always spell its reply text out.

Every reply fakesmtp itself chooses comes from here; aiosmtpd's own protocol replies
(syntax errors, 552 too much data, ...) stay aiosmtpd's.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Reply(NamedTuple):
    code: int
    text: str

    def line(self) -> str:
        """The reply as one SMTP line, without CRLF."""
        return f"{self.code} {self.text}"

    def tagged(self, rule_id: str) -> str:
        """The reply line naming the fault rule that produced it, so a client can tell."""
        return f"{self.code} {self.text} [fakesmtp rule={rule_id}]"

    @property
    def closes(self) -> bool:
        """421 means the server closes the channel after replying (RFC 5321 3.8)."""
        return self.code == 421


S221_BYE: Final = Reply(221, "Bye")
S250_OK: Final = Reply(250, "OK")
S354_START_DATA: Final = Reply(354, "End data with <CR><LF>.<CR><LF>")

S421_UNAVAILABLE: Final = Reply(421, "Service not available; closing transmission channel")
S421_RATE_LIMIT: Final = Reply(421, "Rate limit exceeded; try again later")
S421_TOO_MANY_CONNECTIONS: Final = Reply(421, "Too many connections; try again later")
S450_MAILBOX_BUSY: Final = Reply(450, "Mailbox unavailable; try again later")
S451_LOCAL_ERROR: Final = Reply(451, "Local error in processing; try again later")
S452_NO_STORAGE: Final = Reply(452, "Insufficient system storage")
S550_NO_MAILBOX: Final = Reply(550, "Mailbox unavailable")
S551_NOT_LOCAL: Final = Reply(551, "User not local")
S552_TOO_BIG: Final = Reply(552, "Exceeded storage allocation")
S553_BAD_NAME: Final = Reply(553, "Mailbox name not allowed")
# Addresses refused before any phase runs (see fakesmtp.smtp.address_refusal); RFC 3463 and
# RFC 6531 enhanced codes, as aiosmtpd gives its own "553 5.1.3 Error: malformed address".
S553_CONTROL_CHARACTER: Final = Reply(553, "5.1.3 Control character in address")
S553_NOT_UTF8: Final = Reply(553, "5.1.3 Address is not valid UTF-8")
S553_NEEDS_SMTPUTF8: Final = Reply(553, "5.6.7 Non-ASCII address needs MAIL FROM SMTPUTF8")
S554_FAILED: Final = Reply(554, "Transaction failed")

#: The default text of a fault reply that names only its code.
BY_CODE: Final[dict[int, Reply]] = {
    r.code: r
    for r in (
        S421_UNAVAILABLE,
        S450_MAILBOX_BUSY,
        S451_LOCAL_ERROR,
        S452_NO_STORAGE,
        S550_NO_MAILBOX,
        S551_NOT_LOCAL,
        S552_TOO_BIG,
        S553_BAD_NAME,
        S554_FAILED,
    )
}


def queued(message_id: str) -> str:
    """The 250 that accepts a message, carrying its id (``GET /api/messages/{id}``)."""
    return f"{S250_OK.code} {S250_OK.text} queued as {message_id}"


def for_code(code: int, text: str | None = None) -> Reply:
    """A failure reply with ``code`` (400-599) and ``text``, or the code's default text."""
    if not 400 <= code <= 599:
        raise ValueError(f"reply code must be 4xx or 5xx, got {code}")
    if text:
        return Reply(code, text)
    default = BY_CODE.get(code)
    if default is not None:
        return default
    return Reply(code, "Transient failure" if code < 500 else "Permanent failure")


def code_of(line: str | bytes) -> int | None:
    """The 3-digit code at the start of a reply line, or None."""
    head = line[:3]
    if isinstance(head, bytes):
        head = head.decode("ascii", "replace")
    return int(head) if head.isdigit() else None
