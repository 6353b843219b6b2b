"""UTC time as integer microseconds, and durations written as ``7d`` or ``90s``.

Events are stored with microsecond precision; integer arithmetic keeps
clock-skew correction exact where floats would round.

>>> parse_duration("7d")
datetime.timedelta(days=7)
>>> to_us(from_us(1_700_000_000_123_456))
1700000000123456
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from headwater.core.errors import ConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


def to_us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    """The aware UTC datetime for ``value`` microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=value)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (microsecond precision)."""
    return from_us(now_us())


def parse_utc(text: str) -> datetime:
    """An ISO date or time; without a zone it is UTC. Raises ``ValueError``.

    >>> parse_utc("2026-11-01")
    datetime.datetime(2026, 11, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def signed_duration(text: str) -> timedelta:
    """A duration that may be negative: ``"-6d"``, ``"+1h"``, ``"0d"``.

    >>> signed_duration("-6d"), signed_duration("0d")
    (datetime.timedelta(days=-6), datetime.timedelta(0))
    """
    stripped = text.strip()
    sign = -1 if stripped.startswith("-") else 1
    return sign * parse_duration(stripped.lstrip("+-"))


def parse_duration(text: str) -> timedelta:
    """Parse ``"500ms"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(
            f"{text!r} is not a duration",
            hint='write a whole number and a unit: "500ms", "90s", "15m", "12h", "7d" or "2w"',
        )
    return int(match.group(1)) * _UNITS[match.group(2)]
