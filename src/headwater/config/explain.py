"""msgspec's validation messages turned into ones that name the TOML table and the fix."""

from __future__ import annotations

import re

import msgspec

from headwater.collect.settings import PiiRule, SourceSettings
from headwater.config.file import SINKS, TABLES, ProjectFile
from headwater.core.errors import ConfigError
from headwater.deliver.settings import FilesSink

_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?"
)
_AT = re.compile(r" - at `\$(?P<at>[^`]*)`$")
_PII_AT = re.compile(r" - at `\$\.sources\[\.\.\.\]\.pii(?:\[(?P<index>\d+)\])?(?:\.\w+)?`$")


def explain(exc: msgspec.ValidationError, path: str, raw: dict[str, object]) -> ConfigError:
    """Turn msgspec's message into one that names the TOML table and the fix."""
    text = str(exc)
    if match := _PII_AT.search(text):
        return _pii_error(text[: match.start()], match.group("index"), path, raw)
    if match := _UNKNOWN.match(text):
        key = match.group("key")
        at = (match.group("at") or "").lstrip(".")
        top = re.split(r"[.\[]", at, maxsplit=1)[0]
        struct = TABLES.get(top, ProjectFile)
        in_sink = at.endswith("sinks[...]")
        if in_sink:
            at, struct = _sink_with(raw, key)
        elif own := re.fullmatch(r"environments\[\.\.\.\]\.(\w+)", at):
            # An environment's own table (store, warehouse): name it and list its keys.
            sub = own.group(1)
            struct = TABLES.get(sub, struct)
            names = [n for n, t in _named_tables(raw, top) if key in _table(t, sub)]
            at = f"{top}.{names[0] if names else '<name>'}.{sub}"
        elif at.startswith(("sources[", "consumers[", "admins[", "environments[", "models[")):
            # msgspec says `sources[...]`; find which table holds the key.
            names = [n for n, t in _named_tables(raw, top) if key in t]
            at = f"{top}.{names[0] if names else '<name>'}"
        table = f"[{at}]" if at else "the top level"
        allowed = ", ".join(
            ("type", *struct.__struct_fields__) if in_sink else struct.__struct_fields__
        )
        return ConfigError(
            f"unknown key `{key}` in {table}",
            path=path,
            hint=f"allowed keys there: {allowed}",
        )
    if text.startswith(("Object missing required field `type`", "Invalid value")) and (
        "sinks[" in text
    ):
        return _sink_type_error(raw, path)
    where = ""
    if match := _AT.search(text):
        where = f" at `{match.group('at').lstrip('.')}`"
        text = text[: match.start()]
    field = where.strip(" `").rsplit(".", 1)[-1]
    hint = f"one of: {_CHOICES[field]}" if field in _CHOICES else None
    if "sinks[...]" in where:
        # Name the sink whose value msgspec quotes.
        for label, values in _sink_tables(raw):
            if field in values and repr(values[field]) in text:
                return ConfigError(f"[{label}] {field}: {text}", path=path, hint=hint)
    return ConfigError(f"{text}{where}", path=path, hint=hint)


_CHOICES = {
    "format": "parquet, csv, jsonl",
    "engine": "duckdb, postgres, spark, bigquery",
    "action": "drop, hash, truncate",
}


def _pii_error(text: str, index: str | None, path: str, raw: dict[str, object]) -> ConfigError:
    """A PII rule msgspec refused, named by its source and number."""
    names = [n for n, t in _named_tables(raw, "sources") if not _converts(t, SourceSettings)]
    table = f"[[sources.{names[0] if names else '<name>'}.pii]]"
    where = f"{table} rule {int(index) + 1}" if index is not None else table
    if text.startswith("Object contains unknown field"):
        hint = f"allowed keys there: {', '.join(PiiRule.__struct_fields__)}"
        if "key" in text:
            hint += "; the key is pii_key in the source's own table, as an environment reference"
    elif text.startswith("Invalid enum value"):
        hint = f"one of: {_CHOICES['action']}"
    elif index is None:
        hint = "write each rule as its own [[sources.NAME.pii]] table with path and action"
    else:
        hint = f'e.g. path = "traits.email" and action = one of {_CHOICES["action"]}'
    return ConfigError(f"{where}: {text}", path=path, hint=hint)


def _converts(value: object, struct: type[msgspec.Struct]) -> bool:
    try:
        msgspec.convert(value, struct)
    except msgspec.ValidationError:
        return False
    return True


def _named_tables(raw: dict[str, object], top: str) -> list[tuple[str, dict[str, object]]]:
    tables = raw.get(top)
    if not isinstance(tables, dict):
        return []
    return [(n, t) for n, t in tables.items() if isinstance(t, dict)]


def _sink_tables(raw: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    """Every sink table with its TOML name: ``sinks.X`` and ``environments.E.sinks.X``."""
    found = [(f"sinks.{n}", t) for n, t in _named_tables(raw, "sinks")]
    for environment, table in _named_tables(raw, "environments"):
        found += [(f"environments.{environment}.sinks.{n}", t) for n, t in _named_tables(
            table, "sinks")]  # fmt: skip
    return found


def _sink_with(raw: dict[str, object], key: str) -> tuple[str, type[msgspec.Struct]]:
    """The sink whose type does not allow ``key`` (msgspec does not say which)."""
    for label, table in _sink_tables(raw):
        kind = table.get("type")
        struct = SINKS.get(kind, FilesSink) if isinstance(kind, str) else FilesSink
        if key in table and key not in struct.__struct_fields__:
            return label, struct
    return "sinks.<name>", FilesSink


def _sink_type_error(raw: dict[str, object], path: str) -> ConfigError:
    for label, table in _sink_tables(raw):
        kind = table.get("type")
        if kind not in SINKS:
            said = "has no type" if kind is None else f"has type {kind!r}"
            return ConfigError(
                f"[{label}] {said}",
                path=path,
                hint='set type = "files", "postgres" or "webhook"',
            )
    return ConfigError("a [sinks.NAME] table has no valid type", path=path)


def _table(table: dict[str, object], name: str) -> dict[str, object]:
    """The sub-table ``name`` of ``table`` (empty when it is not a table)."""
    found = table.get(name)
    return found if isinstance(found, dict) else {}
