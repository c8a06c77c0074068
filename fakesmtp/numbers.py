"""The one way fakesmtp reads a number from outside: fault triggers, latency durations, API
query values. Every caller goes through :func:`finite`, so none has to remember the traps.

The traps: ``float()`` accepts ``nan``, ``inf`` and ``Infinity``, and both NaN and the
infinities slip through range checks (every comparison with NaN is false), to crash later
(``int(inf)``) or to make a rule that never fires (``prob=nan``); ``1e999`` is infinity too;
an integer too big for a float raises OverflowError instead of ValueError; and ``True`` is
an ``int``.
"""

from __future__ import annotations

import math
from typing import Final

_SHOWN: Final = 40  # characters of a bad value quoted back in an error message


class NumberError(ValueError):
    """Not a finite number. ``field`` names the input, as the caller called it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def finite(raw: object, field: str) -> float:
    """``raw`` (an int, a float, or a string that ``float()`` reads) as a finite float.

    Raises :class:`NumberError` naming ``field`` for anything else: NaN, an infinity, a value
    too big for a float, a bool, a string that is not a number, or another type.
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise NumberError(f"{field}={shown(raw)} is not a number", field)
    try:
        value = float(raw)
    except OverflowError:  # an int beyond the float range
        value = math.inf
    except ValueError:
        raise NumberError(f"{field}={shown(raw)} is not a number", field) from None
    if not math.isfinite(value):
        raise NumberError(f"{field}={shown(raw)} is not a finite number", field)
    return value


def shown(value: object) -> str:
    """``repr(value)``, cut short: an error message quotes the input, not a megabyte of it."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past str()'s digit limit; a deep list
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."
