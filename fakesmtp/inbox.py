"""The ``GET /`` page: recent messages and the active latency and fault settings.

Everything shown comes from mail a client sent or config a client set, so every value is
escaped; links in messages are listed as text, never as anchors (not even a prefetch may
spend a verification token).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import Any

from fakesmtp.config import Config
from fakesmtp.latency import PHASES
from fakesmtp.store import Message

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin-bottom:1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} code{font-size:12px} .muted{color:#777}
"""


def render_inbox(
    messages: Sequence[Message], config: Config, stats: dict[str, Any], total: int
) -> str:
    rows = "\n".join(_message_row(m) for m in messages) or (
        '<tr><td colspan="6" class="muted">no messages yet</td></tr>'
    )
    latency = "\n".join(
        f"<tr><th>{escape(p)}</th><td><code>{escape(str(config.latency.get(p, '0')))}</code>"
        "</td></tr>"
        for p in PHASES
    )
    faults = "\n".join(
        f"<li><code>{escape(str(rule))}</code></li>" for rule in config.faults
    ) or '<li class="muted">none</li>'
    conns = stats["connections"]
    rejected = stats["rejected"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fakesmtp inbox</title>
<style>{_STYLE}</style></head><body>
<h1>fakesmtp inbox</h1>
<p>{int(stats["received"])} received, {total} stored, {int(stats["evicted"])} evicted,
{int(rejected["total"])} rejected; connections {int(conns["open"])} open,
{int(conns["total"])} total. Seed <code>{escape(str(config.seed))}</code>.
<a href="/api/stats">stats</a> · <a href="/api/config">config</a> ·
<a href="/metrics">metrics</a></p>
<h2>Latency</h2><table>{latency}</table>
<h2>Faults</h2><ul>{faults}</ul>
<h2>Recent messages</h2>
<table><tr><th>received</th><th>from</th><th>to</th><th>subject</th><th>size</th>
<th>links</th></tr>
{rows}
</table></body></html>
"""


def _message_row(msg: Message) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(msg.received_at))
    links = "<br>".join(f"<code>{escape(link)}</code>" for link in msg.links)
    return (
        f'<tr><td><a href="/api/messages/{escape(msg.id)}">{escape(when)}</a></td>'
        f"<td>{escape(msg.mail_from)}</td><td>{escape(', '.join(msg.rcpt_tos))}</td>"
        f"<td>{escape(msg.subject)}</td><td>{msg.size}</td><td>{links}</td></tr>"
    )
