"""The header of a SQL pipeline: TOML inside the first block comment.

An editor's SQL mode shows it as a comment, and the SQL below stays plain SQL::

    /* headwater
    schedule = "@hourly"
    kind = "incremental"
    time_column = "hour"
    */
    SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events
    FROM events WHERE received_at >= @start AND received_at < @end GROUP BY 1

>>> header, body = split_header("/* headwater\\nkind = 'full'\\n*/\\nSELECT 1", "x.sql")
>>> header.kind, body.count("\\n")
('full', 3)
"""

from __future__ import annotations

import re
import tomllib

import msgspec

from headwater.process.errors import PipelineError
from headwater.process.settings import AUDIT_KEYS, HEADER_KEYS, PipelineHeader

_HEADER = re.compile(r"\A(?:\s*--[^\n]*\n)*\s*/\*\s*headwater\b(?P<toml>.*?)\*/", re.S)
_TOML_LINE = re.compile(r"at line (\d+), column (\d+)")
_UNKNOWN = re.compile(r"unknown field `(?P<key>[^`]+)`")


def split_header(text: str, path: str) -> tuple[PipelineHeader, str]:
    """The parsed header and the SQL body; the body keeps the file's line numbers."""
    match = _HEADER.match(text)
    if match is None:
        return PipelineHeader(), text
    first_line = text[: match.start("toml")].count("\n") + 1
    toml = match.group("toml")
    try:
        raw = tomllib.loads(toml)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        line = first_line + int(found.group(1)) - 1 if found else first_line
        column = int(found.group(2)) if found else None
        if found and found.group(1) == "1":
            column = None  # the header's first line shares the file's line with "/* headwater"
        hint = None
        if text[match.end() :].split("\n", 1)[0].strip():
            # The comment closed mid-line: a "*/" inside the header, as in "*/15".
            hint = (
                'a "*/" ends the header comment, as in a "*/15" cron step; '
                'list the minutes instead: "0,15,30,45 * * * *"'
            )
        raise PipelineError(
            f"the header is not valid TOML ({exc})",
            path=path,
            line=line,
            column=column,
            hint=hint,
        ) from None
    header = from_mapping(raw, path, toml, first_line)
    return header, body_of(text)


def body_of(text: str) -> str:
    """The SQL body of a pipeline file, its header (valid or not) blanked out but its
    newlines kept, so SQL errors point at file lines."""
    match = _HEADER.match(text)
    if match is None:
        return text
    return "\n" * text[: match.end()].count("\n") + text[match.end() :]


def from_mapping(
    raw: dict[str, object], path: str, toml: str = "", first_line: int = 1
) -> PipelineHeader:
    """Strictly convert header values; an unknown key names its line and the allowed keys."""
    try:
        return msgspec.convert(raw, PipelineHeader)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN.search(text)
        key = unknown.group("key") if unknown else None
        line, column = _line_of(toml, key, first_line) if key else (None, None)
        if unknown:
            nested = "$.audits" in text
            allowed = AUDIT_KEYS if nested else HEADER_KEYS
            raise PipelineError(
                f"unknown {'audit' if nested else 'header'} key `{key}`",
                path=path,
                line=line,
                column=column,
                hint=f"allowed keys: {', '.join(allowed)}",
            ) from None
        raise PipelineError(f"bad header value: {text}", path=path, line=first_line) from None


def _line_of(toml: str, key: str | None, first_line: int) -> tuple[int, int | None]:
    """The file line and 1-based column of ``key =`` in the header."""
    pattern = re.compile(rf"(^|[\s{{,])(?P<key>{re.escape(key or '')})\s*=", re.M)
    for number, line in enumerate(toml.splitlines()):
        found = pattern.search(line)
        if found:
            return first_line + number, found.start("key") + 1 if number else None
    return first_line, None
