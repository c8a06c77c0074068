"""Read a captured message: headers, subject, text and HTML bodies, and the links in them.

Links are found, never fetched: a verification link carries a single-use token, and
following it here would spend the token before the test (or the user) does.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from html.parser import HTMLParser

_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""  # sentence punctuation after a URL in plain text


@dataclass(frozen=True)
class Content:
    headers: tuple[tuple[str, str], ...]
    subject: str
    text: str | None
    html: str | None
    links: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


def parse_content(raw: bytes) -> Content:
    """Parse RFC 5322 bytes. Never raises: a broken part yields None or a best-effort decode."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    headers = tuple((k, _safe_str(v)) for k, v in _safe_items(msg))
    subject = next((v for k, v in headers if k.lower() == "subject"), "")
    text = _body(msg, "plain")
    html = _body(msg, "html")
    return Content(headers, subject, text, html, extract_links(text, html))


def extract_links(text: str | None, html: str | None) -> tuple[str, ...]:
    """http(s) URLs in the text body, and in the HTML body's attributes and text, in order,
    without duplicates. HTML entities in attributes are decoded (``&amp;`` -> ``&``)."""
    found: list[str] = []
    if text:
        found.extend(_urls_in(text))
    if html:
        collector = _LinkCollector()
        try:
            collector.feed(html)
            collector.close()
        except Exception:  # a broken HTML body still yields what was found before the break
            pass
        found.extend(collector.links)
    return tuple(dict.fromkeys(found))


def _urls_in(text: str) -> list[str]:
    return [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(text)]


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and _URL.match(value.strip()):
                self.links.append(value.strip())

    def handle_data(self, data: str) -> None:
        self.links.extend(_urls_in(data))


def _body(msg: Message, subtype: str) -> str | None:
    if not isinstance(msg, EmailMessage):
        return None
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        return None
    if part is None:
        return None
    try:
        content = part.get_content()
    except Exception:  # unknown charset or broken transfer encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def _safe_items(msg: Message) -> list[tuple[str, object]]:
    try:
        return list(msg.items())
    except Exception:
        return [(k, v) for k, v in msg.raw_items()]  # type: ignore[attr-defined]


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return repr(value)
