"""How each variant looks in every chart: colour, marker, line style and hatch.

Colours are the Okabe-Ito palette (safe for colour-blind readers); marker, line style and
hatch differ per variant too, so a greyscale print still tells the variants apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantStyle:
    color: str
    marker: str
    linestyle: str | tuple[int, tuple[int, ...]]
    hatch: str


STYLES: dict[str, VariantStyle] = {
    "baseline": VariantStyle("#7f7f7f", "s", ":", ""),
    "sync": VariantStyle("#D55E00", "o", "-", "///"),
    "threaded": VariantStyle("#0072B2", "^", "--", "..."),
    "queued": VariantStyle("#009E73", "D", "-.", "xx"),
    "outbox": VariantStyle("#CC79A7", "v", (0, (3, 1, 1, 1)), "\\\\"),
}
_SPARE = [VariantStyle("#E69F00", "P", (0, (5, 2)), "++"),
          VariantStyle("#56B4E9", "X", (0, (1, 1)), "--")]

MISSING_COLOR = "#111111"  # delivery: emails that never arrived
DUPLICATE_HATCH = "oo"
GOOD_COLOR = "#cfe8cf"
NEEDS_IMPROVEMENT_COLOR = "#fbe6b8"
POOR_COLOR = "#f4c7c3"


def style(variant: str) -> VariantStyle:
    """The variant's style; a variant the registry does not know gets a stable spare one."""
    if variant in STYLES:
        return STYLES[variant]
    return _SPARE[sum(map(ord, variant)) % len(_SPARE)]
