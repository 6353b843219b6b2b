"""Log lines: JSON for log collectors, text for a person at a terminal; set up in one place.

A JSON line is what Cloud Logging (and most collectors) read from a container's
stderr: ``severity``, ``message``, ``time`` (RFC 3339, UTC), ``logger``, then
the record's structured fields, given with :func:`fields`::

    log.info("run succeeded", extra=fields(pipeline="dau", rows=12))

The format follows the stream: JSON when stderr is not a terminal (a
container, cron, a pipe), text when it is; ``HEADWATER_LOG_FORMAT=json|text``
forces either.

>>> record = logging.LogRecord("headwater.x", logging.INFO, "", 0, "hi", None, None)
>>> record.created = 0.0
>>> JsonFormatter().format(record)
'{"severity":"INFO","message":"hi","time":"1970-01-01T00:00:00.000000Z","logger":"headwater.x"}'
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

from headwater.core import jsonio
from headwater.core.errors import ConfigError

LogFormat = Literal["json", "text"]
#: The environment variable that forces a format.
FORMAT_VARIABLE = "HEADWATER_LOG_FORMAT"
FORMATS: tuple[LogFormat, ...] = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Cloud Logging's LogSeverity names; Python's own names for the rest.
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
# What a structured field may not overwrite.
_RESERVED = frozenset({"severity", "message", "time", "logger"})
_FIELDS = "headwater_fields"


def fields(**values: object) -> dict[str, object]:
    """Structured fields of one record, as ``extra=`` of a logging call.

    >>> fields(pipeline="dau", rows=3)
    {'headwater_fields': {'pipeline': 'dau', 'rows': 3}}
    """
    return {_FIELDS: values}


def field(record: logging.LogRecord, name: str) -> object:
    """A structured field of ``record`` (given by :func:`fields`), else ``None``."""
    found = getattr(record, _FIELDS, None)
    return found.get(name) if isinstance(found, dict) else None


def choose_format(given: str | None, stream: TextIO) -> LogFormat:
    """``given`` (an option or ``HEADWATER_LOG_FORMAT``), else JSON unless ``stream`` is a
    terminal.

    >>> import io
    >>> choose_format(None, io.StringIO()), choose_format("TEXT", io.StringIO())
    ('json', 'text')
    """
    if given:
        value = given.strip().lower()
        if value not in FORMATS:
            raise ConfigError(
                f"log format {given!r} is not one of json, text",
                hint=f"{FORMAT_VARIABLE}=json (for log collectors) or {FORMAT_VARIABLE}=text",
            )
        return "json" if value == "json" else "text"
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": _rfc3339(record.created),
            "logger": record.name,
        }
        extra = getattr(record, _FIELDS, None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                entry[f"field_{key}" if key in _RESERVED else key] = value
        if record.exc_info:
            # Cloud Error Reporting reads a trace from ``stack_trace``.
            entry["stack_trace"] = self.formatException(record.exc_info)
        return jsonio.dumps_str(entry)


class _UTCFormatter(logging.Formatter):
    """Text lines with UTC times, as everything else in Headwater."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (and replaces when called again).

    With ``follow``, each record goes to ``sys.stderr`` as it is then: a progress bar on
    the terminal swaps in a stand-in that prints lines above the bar, where a line written
    to the terminal directly would be drawn over.
    """

    def __init__(self, stream: TextIO, *, follow: bool) -> None:
        super().__init__(stream)
        self._follow = follow

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow:
            self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def without(drop: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Within the block, the records ``drop`` picks are not written by the handler
    :func:`configure` installed (the command prints them its own way)."""

    def keep(record: logging.LogRecord) -> bool:
        return not drop(record)

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, _Handler)]
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def configure(
    fmt: LogFormat, *, level: int = logging.INFO, debug: bool = False, stream: TextIO | None = None
) -> None:
    """Send log records to ``stream`` (stderr) in ``fmt``: Headwater's at ``level``, other
    libraries' from WARNING (``debug``: everything from DEBUG).

    Called once by the command line before any command runs; calling it again
    replaces the handler it installed.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    target = stream if stream is not None else sys.stderr
    # Text on a terminal follows sys.stderr (see _Handler); anything else, a file or a
    # pipe, keeps the stream it was given.
    handler = _Handler(target, follow=stream is None and fmt == "text" and target.isatty())
    handler.setFormatter(JsonFormatter() if fmt == "json" else _UTCFormatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("headwater").setLevel(logging.DEBUG if debug else level)
    # sqlglot warns when it reads a statement it does not know; Headwater says what it
    # refuses and why on its own.
    logging.getLogger("sqlglot").setLevel(logging.DEBUG if debug else logging.ERROR)


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
