"""Durations as people write them (``30d``, ``12h``, ``0.5s``): parsed for the settings
and the policy file, and printed back the same way."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from ``30d``, ``12h``, ``15m``, ``45s``, ``2w`` or a plain number of seconds.

    >>> parse_duration("30d"), parse_duration("90"), parse_duration(1.5)
    (2592000.0, 90.0, 1.5)
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or e.g. '30d', '12h', '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30d, 12h, 15m, 45s or seconds)")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The written form of a duration: the largest of d, h, m it is a whole number of, else
    seconds (``14d``, not ``2w``: the docs and defaults count days).

    >>> format_duration(2592000.0), format_duration(0.5), format_duration(5400.0)
    ('30d', '0.5s', '90m')
    """
    for unit in ("d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:g}s"
