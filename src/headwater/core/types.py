"""Shapes shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """A half-open UTC time range ``[start, end)``, the unit of incremental work.

    >>> from datetime import UTC
    >>> Interval(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    Interval(start=datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), \
end=datetime.datetime(2026, 1, 2, 0, 0, tzinfo=datetime.timezone.utc))
    """

    start: datetime
    end: datetime

    def __str__(self) -> str:
        """``[2026-01-01T00:00Z, 2026-01-02T00:00Z)``, for logs and messages; to the second
        where a bound is not on the minute.

        >>> from datetime import datetime, UTC
        >>> str(Interval(datetime(2026, 1, 1, 16, 17, 10, tzinfo=UTC),
        ...              datetime(2026, 1, 1, 16, 17, 20, tzinfo=UTC)))
        '[2026-01-01T16:17:10Z, 2026-01-01T16:17:20Z)'
        """
        if self.start.second or self.end.second:
            return f"[{self.start:%Y-%m-%dT%H:%M:%SZ}, {self.end:%Y-%m-%dT%H:%M:%SZ})"
        return f"[{self.start:%Y-%m-%dT%H:%MZ}, {self.end:%Y-%m-%dT%H:%MZ})"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware (UTC)")
        if self.end <= self.start:
            raise ValueError(f"interval end {self.end} is not after its start {self.start}")


@dataclass(frozen=True, slots=True)
class Output:
    """A pipeline's output as the stages after pipelines see it: the table (named like the
    pipeline), its key, and how it divides into intervals.

    ``time_column`` is set for an incremental output, whose intervals are replaced one at
    a time; ``None`` for a full output, replaced whole by every run.
    """

    name: str
    key: tuple[str, ...] = ()
    time_column: str | None = None
