"""Read a captured message: headers, subject, text and HTML bodies, and the links in them.

Links are found, never fetched: a verification link carries a single-use token, and
following it here would spend the token before the test (or the user) does.

The bytes come from whoever connected, so reading them is bounded. The email package
recurses once per MIME level (a message nested 1,000 deep raises RecursionError), and its
cost grows faster than the input on some shapes (many parts, many or long header fields;
a structured field costs up to ~10 µs per character). So :func:`parse_content` reads at most
``MAX_PARSE_BYTES`` of a message, ``MAX_DEPTH`` levels of nesting, ``MAX_PARTS`` parts, and
``MAX_HEADERS`` header fields of at most ``MAX_HEADER_CHARS`` each and ``MAX_HEADER_TOTAL``
in all. Past a limit it stops, keeps what it had read, and says why in ``parse_error``.
Within the limits a message parses in well under a second, and one of at most
``CHEAP_PARSE_BYTES`` in a few tens of milliseconds even when crafted to be slow.

For the same reason, links in HTML are found by a linear scan rather than ``html.parser``
(quadratic on runs of unclosed ``<!--`` or ``<a``), and a body is never decoded with punycode
(quadratic too, and no mail charset).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from html import unescape
from typing import Any, Final

MAX_PARSE_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 50
MAX_PARTS: Final = 200
MAX_HEADERS: Final = 1000
MAX_HEADER_CHARS: Final = 4 * 1024
MAX_HEADER_TOTAL: Final = 32 * 1024
CHEAP_PARSE_BYTES: Final = 4 * 1024

_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""  # sentence punctuation after a URL in plain text
# HTML in one left-to-right pass. Every alternative either fails on its first characters or
# consumes all it scanned (an unclosed comment or tag runs to the end, as in a browser), so
# the scan is linear in the length of the document.
_HTML_TOKEN = re.compile(
    r"(?P<comment><!--.*?(?:-->|\Z))"
    r"|(?P<tag><[A-Za-z][^>]*>?)"
    r"|(?P<other><[!?/][^>]*>?)"  # declarations, processing instructions, end tags
    r"|(?P<text>[^<]+|<)",
    re.DOTALL,
)
_LINK_ATTR = re.compile(
    r"""[\s"'/](?:href|src)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.IGNORECASE
)
_SLOW_CODECS: Final = frozenset({"punycode"})


@dataclass(frozen=True)
class Content:
    """What was read of a message. ``parse_error`` is None if all of it was read, else why
    reading stopped (the other fields then hold what was read before that point)."""

    headers: tuple[tuple[str, str], ...]
    subject: str
    text: str | None
    html: str | None
    links: tuple[str, ...]
    parse_error: str | None = None

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


def parse_content(raw: bytes) -> Content:
    """Parse RFC 5322 bytes within the limits in the module docstring. Never raises: a part
    that will not decode gives None or a best-effort decode, a header field that will not
    decode is given as received, and a message that stops the parser keeps what was read."""
    policy = _POLICY.with_budget()
    budget = _budget(policy)
    parser = BytesFeedParser(policy=policy)
    error: str | None = None
    try:
        if len(raw) > MAX_PARSE_BYTES:
            error = f"message is {len(raw)} bytes; only the first {MAX_PARSE_BYTES} were read"
            raw = raw[:MAX_PARSE_BYTES]
        parser.feed(raw)
        parser.close()
    except _Stop as stop:
        error = str(stop)
    except Exception as err:  # the email package's own failure: keep what it had read
        error = f"unreadable message ({type(err).__name__}: {err})"[:300]
    root = budget.root
    if root is None:
        return Content((), "", None, None, (), error)
    headers = _headers(root)
    subject = next((v for k, v in headers if k.lower() == "subject"), "")
    text = _body(root, "plain")
    html = _body(root, "html")
    return Content(headers, subject, text, html, extract_links(text, html), error)


def extract_links(text: str | None, html: str | None) -> tuple[str, ...]:
    """http(s) URLs in the text body, and in the HTML body's href/src attributes and text, in
    order, without duplicates. HTML entities are decoded (``&amp;`` -> ``&``)."""
    found: list[str] = []
    if text:
        found.extend(_urls_in(text))
    if html:
        found.extend(_html_links(html))
    return tuple(dict.fromkeys(found))


def _urls_in(text: str) -> list[str]:
    return [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(text)]


def _html_links(html: str) -> list[str]:
    links: list[str] = []
    for token in _HTML_TOKEN.finditer(html):
        kind = token.lastgroup
        if kind == "tag":
            for m in _LINK_ATTR.finditer(token.group()):
                value = unescape(next(g for g in m.groups() if g is not None)).strip()
                if _URL.match(value):
                    links.append(value)
        elif kind == "text":
            links.extend(_urls_in(unescape(token.group())))
    return links


# -- the bounded parse ----------------------------------------------------------------------


class _Stop(Exception):
    """A limit was reached; the message says which. Raised inside the parser to end it."""


class _Budget:
    """The counts of one parse, shared by all parts of the message (through the policy)."""

    def __init__(self) -> None:
        self.parts = 0
        self.headers = 0
        self.header_chars = 0
        self.fields: dict[tuple[str, str], Any] = {}  # parsed header fields, by source
        self.root: _Part | None = None


class _Part(EmailMessage):
    """The message, and each MIME part, as the parser builds them: the parser attaches every
    part (multipart children and message/rfc822 payloads alike) to its parent, so ``attach``
    is where nesting depth and part count are checked, before the parser recurses."""

    depth = 0

    def __init__(self, policy: Any = None) -> None:
        super().__init__(policy)
        budget = _budget(self.policy)
        if budget.root is None:
            budget.root = self

    def attach(self, payload: Any) -> None:
        budget = _budget(self.policy)
        budget.parts += 1
        if self.depth >= MAX_DEPTH:
            raise _Stop(f"MIME nesting deeper than {MAX_DEPTH} levels")
        if budget.parts > MAX_PARTS:
            raise _Stop(f"more than {MAX_PARTS} MIME parts")
        payload.depth = self.depth + 1
        super().attach(payload)


class _Policy(EmailPolicy):
    """``policy.default`` plus the budget: header fields are counted and measured as the
    parser reads them, and a structured field nested too deeply (comments in comments) ends
    the parse instead of raising RecursionError."""

    budget: _Budget | None = None
    message_factory = _Part

    def with_budget(self) -> _Policy:
        """A copy carrying a fresh budget: the policy is what every part of one parse shares."""
        policy = self.clone()
        object.__setattr__(policy, "budget", _Budget())  # policies refuse plain assignment
        return policy

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        budget = self.budget
        assert budget is not None, "a parse policy is a clone with a budget"
        chars = sum(map(len, sourcelines))
        budget.headers += 1
        budget.header_chars += chars
        if budget.headers > MAX_HEADERS:
            raise _Stop(f"more than {MAX_HEADERS} header fields")
        if chars > MAX_HEADER_CHARS:
            raise _Stop(f"a header field longer than {MAX_HEADER_CHARS} characters")
        if budget.header_chars > MAX_HEADER_TOTAL:
            raise _Stop(f"header fields longer than {MAX_HEADER_TOTAL} characters in all")
        return super().header_source_parse(sourcelines)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        # policy.default parses a field anew on every read, and the parser reads each part's
        # Content-Type a dozen times: parse each field once per message.
        budget = self.budget
        assert budget is not None, "a parse policy is a clone with a budget"
        key = (name, value)
        field = budget.fields.get(key)
        if field is None:
            try:
                field = super().header_fetch_parse(name, value)
            except RecursionError:
                raise _Stop(f"the {name[:80]} header field is nested too deeply") from None
            budget.fields[key] = field
        return field


_POLICY: Final = _Policy()


def _budget(policy: object) -> _Budget:
    assert isinstance(policy, _Policy) and policy.budget is not None
    return policy.budget


def _headers(msg: Message) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for name, raw in msg.raw_items():
        try:
            value = str(msg.policy.header_fetch_parse(name, raw))
        except Exception:  # e.g. _Stop for a field nested too deeply: show it as received
            # The parser keeps 8-bit bytes as lone surrogates, which no JSON or HTML encoder
            # takes: turn them back into bytes and read those as UTF-8.
            text = "".join(str(raw).splitlines()).encode("utf-8", "surrogateescape")
            value = text.decode("utf-8", "replace")
        out.append((name, value))
    return tuple(out)


def _body(msg: Message, subtype: str) -> str | None:
    """The text of the first ``text/<subtype>`` body part (as ``get_body`` picks it)."""
    if not isinstance(msg, EmailMessage):
        return None
    try:
        part = msg.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset("us-ascii")
    except Exception:  # a broken part, or _Stop from one of its header fields
        return None
    if not isinstance(payload, bytes):
        return None
    # Decoded here rather than by get_content(): the charset comes from the sender, and one
    # of Python's codecs (punycode) takes quadratic time.
    try:
        codec = codecs.lookup(charset).name
        if codec in _SLOW_CODECS:
            raise LookupError(codec)
        text = payload.decode(codec, "replace")
    except (LookupError, ValueError):  # unknown, not a text encoding, "undefined", a NUL
        return payload.decode("utf-8", "replace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (utf-7 and unicode-escape make them), which
        text = text.encode("utf-8", "replace").decode()  # no JSON or HTML encoder takes
    return text
