"""Rules ``headwater.toml`` must follow beyond its types: names, secrets stored hashed or
by reference, one engine's settings per store, usable sinks."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from headwater.collect.pii import BadPath, overlap, parse_path
from headwater.collect.settings import SourceSettings
from headwater.config.file import ProjectFile
from headwater.core.clock import parse_duration
from headwater.core.errors import ConfigError
from headwater.core.names import check_name
from headwater.core.secrets import is_environment_reference, stored_form
from headwater.deliver.settings import PostgresSink, Sink, WebhookSink
from headwater.process.models.artifact import kind_of
from headwater.process.models.settings import TAG_COLUMNS, ModelSettings
from headwater.store.settings import (
    EngineSettings,
    RetentionSettings,
    StoreSettings,
    WarehouseSettings,
)


def check(settings: ProjectFile, path: str) -> None:
    """Raise :class:`ConfigError` at the first rule ``settings`` break."""
    for name, source in settings.sources.items():
        _check_holder(
            "source", name, "write_key", source.write_key, path,
            "create keys with `headwater sources add NAME`, which stores only the hash",
        )  # fmt: skip
        _check_pii(name, source, path)
    for name, consumer in settings.consumers.items():
        _check_holder(
            "consumer", name, "token", consumer.token, path,
            "create consumers with `headwater consumers add NAME --datasets a,b`",
        )  # fmt: skip
    for name, admin in settings.admins.items():
        _check_holder(
            "admin", name, "token", admin.token, path,
            "create admins with `headwater admins add NAME`, which stores only the hash",
        )  # fmt: skip
    for name, sink in settings.sinks.items():
        _check_sink(name, sink, path)
    window = parse_duration(settings.collector.dedupe_window)
    _check_store(settings.store, "[store]", path)
    _check_warehouse(settings.store, settings.warehouse, "", window, path)
    _check_retention(settings.retention, "[retention]", window, path)
    for name, environment in settings.environments.items():
        check_name("environment", name, path=path)
        _check_store(environment.store, f"[environments.{name}.store]", path)
        where = f"environments.{name}."
        _check_warehouse(environment.store, environment.warehouse, where, window, path)
        if environment.retention is not None:
            _check_retention(environment.retention, f"[{where}retention]", window, path)
        for sink_name, sink in environment.sinks.items():
            _check_sink(sink_name, sink, path, where=f"[environments.{name}.sinks.{sink_name}]")
        _check_shared(name, environment.shared_sinks, environment.sinks, settings.sinks, path)
        _check_promotion(name, environment.promote_from, settings, path)
    for name, model in settings.models.items():
        _check_model(name, model, path)
    limits = settings.collector
    server = settings.server
    if (
        min(server.header_timeout_seconds, server.body_timeout_seconds) <= 0
        or min(server.max_header_bytes, server.max_headers, server.max_connections) < 1
    ):
        raise ConfigError("[server] timeouts and limits must be positive numbers", path=path)
    sizes = (limits.max_event_bytes, limits.max_request_bytes, limits.max_stored_bytes)
    if min(*sizes, limits.max_batch_events) <= 0:
        raise ConfigError("[collector] limits must be positive numbers", path=path)


def _check_promotion(name: str, source: str | None, settings: ProjectFile, path: str) -> None:
    """``promote_from`` names another environment of the file."""
    if source is None:
        return
    known = sorted(settings.environments)
    if source == name or source not in settings.environments:
        near = difflib.get_close_matches(source, [k for k in known if k != name], n=1)
        raise ConfigError(
            f"[environments.{name}] promote_from = {source!r} is not another environment",
            path=path,
            hint=f"did you mean {near[0]!r}?"
            if near
            else f"environments: {', '.join(k for k in known if k != name) or 'none'}",
        )


def _check_holder(kind: str, name: str, field: str, stored: str, path: str, hint: str) -> None:
    """A source or consumer: a plain name, and its secret stored hashed or by reference."""
    check_name(kind, name, path=path)
    if stored_form(stored) is None:
        raise ConfigError(
            f'[{kind}s.{name}] {field} must be a hash ("sha256:…") or an environment '
            'reference ("${NAME}"), not the secret itself',
            path=path,
            hint=hint,
        )


def _check_pii(name: str, source: SourceSettings, path: str) -> None:
    """Each rule names a member of properties, traits or context; no two overlap; hash
    rules have a key, and the key is in the environment, not in the file."""
    table = f"[[sources.{name}.pii]]"
    for number, rule in enumerate(source.pii, start=1):
        try:
            parse_path(rule.path)
        except BadPath as bad:
            raise ConfigError(
                f"{table} rule {number} (path = {rule.path!r}): {bad.problem}",
                path=path,
                hint=bad.hint,
            ) from None
    twice = overlap([rule.path for rule in source.pii])
    if twice is not None:
        first, second = (source.pii[i] for i in twice)
        via_traits = any(r.path.startswith("traits.") for r in (first, second))
        raise ConfigError(
            f"{table} rules {twice[0] + 1} ({first.path!r}, {first.action}) and {twice[1] + 1} "
            f"({second.path!r}, {second.action}) apply to the same value"
            + (" (a traits rule applies to context.traits too)" if via_traits else ""),
            path=path,
            hint="keep one rule per value: a rule on an object covers everything inside it",
        )
    variable = "HEADWATER_PII_KEY"
    hashed = [n for n, rule in enumerate(source.pii, start=1) if rule.action == "hash"]
    if hashed and source.pii_key is None:
        raise ConfigError(
            f"{table} rule {hashed[0]} hashes {source.pii[hashed[0] - 1].path!r}, and "
            f"[sources.{name}] has no pii_key to hash with",
            path=path,
            hint=f'add pii_key = "${{{variable}}}" to [sources.{name}] and export {variable} '
            "(32 or more random characters) where the server runs",
        )
    if source.pii_key is not None and not is_environment_reference(source.pii_key):
        raise ConfigError(
            f'[sources.{name}] pii_key must be an environment reference ("${{NAME}}"), '
            "not the key itself",
            path=path,
            hint=f'write pii_key = "${{{variable}}}" and export {variable} with the key',
        )


def _check_store(store: EngineSettings, where: str, path: str) -> None:
    if store.engine == "postgres":
        if not store.url:
            raise ConfigError(
                f'{where} engine = "postgres" needs url',
                path=path,
                hint='url = "${DATABASE_URL}", the URL (with its password) from the environment',
            )
        _check_no_password(store.url, f"{where} url", path)
    elif store.url is not None:
        raise ConfigError(f'{where} url is for engine = "postgres"', path=path)


def _check_warehouse(
    store: StoreSettings,
    warehouse: WarehouseSettings | None,
    prefix: str,
    dedupe_window: timedelta,
    path: str,
) -> None:
    """A warehouse is fed by a store collectors can write, which keeps offloaded events at
    least as long as the dedupe window looks back."""
    if warehouse is None:
        return
    _check_store(warehouse, f"[{prefix}warehouse]", path)
    if not store.can_collect:
        raise ConfigError(
            f'[{prefix}store] engine = "{store.engine}" is a warehouse, and [{prefix}warehouse] '
            "is declared too: the store is where collectors write",
            path=path,
            hint=f'make [{prefix}store] engine = "postgres" (the hot store) and keep '
            f'[{prefix}warehouse] engine = "{warehouse.engine}"',
        )
    every = parse_duration(warehouse.offload_interval)
    if every < timedelta(seconds=1) or timedelta(days=1) % every:
        raise ConfigError(
            f"[{prefix}warehouse] offload_interval = {warehouse.offload_interval!r} does not "
            "divide a day into intervals of a second or more",
            path=path,
            hint='e.g. "1h" (the default), "15m" or "1d"',
        )
    if warehouse.engine == "bigquery" and every not in (timedelta(hours=1), timedelta(days=1)):
        raise ConfigError(
            f"[{prefix}warehouse] offload_interval = {warehouse.offload_interval!r}: BigQuery "
            "partitions events by hour or by day, and one offload loads one partition",
            path=path,
            hint='offload_interval = "1h" (or "1d")',
        )
    retain = parse_duration(store.retain)
    if retain < dedupe_window:
        raise ConfigError(
            f"[{prefix}store] retain = {store.retain!r} is shorter than [collector] "
            "dedupe_window: the hot store keeps at least the window it dedupes over",
            path=path,
            hint=f"retain = at least the dedupe window ({dedupe_window})",
        )


def _check_retention(
    retention: RetentionSettings, where: str, dedupe_window: timedelta, path: str
) -> None:
    """Durations that parse and are positive; events kept at least as long as the dedupe
    window looks back (a warehouse that dedupes against ``events`` reads them there, and a
    resent event older than what is kept would be stored again)."""
    for key in ("events", "failed_events"):
        text = getattr(retention, key)
        if text is None:
            continue
        try:
            kept = parse_duration(text)
        except ConfigError as exc:
            raise ConfigError(
                f"{where} {key} = {text!r}: {exc.message}",
                path=path,
                hint='a duration such as "400d", "12w" or "36h"',
            ) from None
        if kept <= timedelta(0):
            raise ConfigError(f"{where} {key} = {text!r} must be longer than nothing", path=path)
        if key == "events" and kept < dedupe_window:
            raise ConfigError(
                f"{where} events = {text!r} is shorter than [collector] dedupe_window "
                f"({dedupe_window}): a resent event older than what is kept would be stored "
                "twice",
                path=path,
                hint=f"keep events at least the dedupe window ({dedupe_window}), or shorten "
                "dedupe_window",
            )
    if retention.batch_rows < 1:
        raise ConfigError(f"{where} batch_rows must be a positive number", path=path)


def _check_no_password(url: str, where: str, path: str) -> None:
    """A PostgreSQL URL in the file: without a password, or wholly from the environment."""
    if is_environment_reference(url):
        return
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception as exc:
        raise ConfigError(f"{where} is not a PostgreSQL URL ({exc})", path=path) from None
    if password:
        raise ConfigError(
            f"{where} holds a password in plain text",
            path=path,
            hint='put the whole URL in an environment variable and write "${NAME}"',
        )


def _check_shared(
    environment: str,
    shared: list[str],
    own: Mapping[str, Sink],
    top: Mapping[str, Sink],
    path: str,
) -> None:
    """``shared_sinks`` names top-level sinks, each once, none also redeclared in the
    environment (which would leave it unclear which one is meant)."""
    where = f"[environments.{environment}] shared_sinks"
    for name in shared:
        if name not in top:
            close = difflib.get_close_matches(name, sorted(top), n=1)
            known = ", ".join(sorted(top)) or "none"
            raise ConfigError(
                f"{where} names {name!r}, which is not a top-level [sinks.{name}] table "
                f"(declared: {known})",
                path=path,
                hint=f"did you mean {close[0]!r}?"
                if close
                else f"declare [sinks.{name}], or drop it from shared_sinks",
            )
        if name in own:
            raise ConfigError(
                f"{where} names {name!r}, which [environments.{environment}.sinks.{name}] "
                "also declares",
                path=path,
                hint=f"keep one: share the default's {name} or declare this environment's own",
            )
    repeated = sorted({name for name in shared if shared.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"{where} names {', '.join(repeated)} more than once",
            path=path,
            hint="name each shared sink once",
        )


def _check_sink(name: str, sink: Sink, path: str, *, where: str | None = None) -> None:
    where = where or f"[sinks.{name}]"
    check_name("sink", name, path=path)
    if sink.max_attempts < 1 or sink.backoff_seconds < 0 or sink.max_backoff_seconds < 0:
        raise ConfigError(
            f"{where} max_attempts must be at least 1 and the backoffs not negative", path=path
        )
    if isinstance(sink, WebhookSink):
        if not is_environment_reference(sink.secret):
            raise ConfigError(
                f'{where} secret must be an environment reference ("${{NAME}}"), '
                "not the secret itself",
                path=path,
                hint=f'write secret = "${{{name.upper().replace("-", "_")}_SECRET}}" '
                "and export that variable",
            )
        if not sink.url.startswith(("https://", "http://", "${")):
            raise ConfigError(f"{where} url must start with https:// or http://", path=path)
        if not sink.url.startswith("${"):
            try:
                parts = urlsplit(sink.url)
                parts.port  # noqa: B018 - raises for a port out of range
            except ValueError as exc:
                raise ConfigError(f"{where} url is not a URL ({exc})", path=path) from None
            if not parts.hostname:
                raise ConfigError(f"{where} url has no host", path=path)
        if sink.batch_rows < 1 or sink.timeout_seconds <= 0:
            raise ConfigError(f"{where} batch_rows and timeout_seconds must be positive", path=path)
    if isinstance(sink, PostgresSink):
        _check_no_password(sink.url, f"{where} url", path)
        for pipeline, key in sink.latest.items():
            if not key or len(set(key)) != len(key):
                raise ConfigError(
                    f"{where} latest.{pipeline} must name the table's key columns, each once",
                    path=path,
                    hint=f'e.g. latest = {{ {pipeline} = ["user_id"] }}',
                )


def _check_model(name: str, model: ModelSettings, path: str) -> None:
    """A model names one artifact (a file Headwater loads, or ``module:function``), its
    features and its outputs, each once."""
    check_name("model", name, path=path)
    where = f"[models.{name}]"
    if (model.path is None) == (model.function is None):
        given = "both path and function" if model.path else "neither path nor function"
        raise ConfigError(
            f"{where} sets {given}",
            path=path,
            hint=f'one of: path = "models/{name}.onnx" (or .joblib, or an fsspec URL), '
            'function = "module:function"',
        )
    for key, value in (("path", model.path), ("shadow", model.shadow)):
        if value is None:
            continue
        if model.function is not None:
            module, _, attribute = value.partition(":")
            if not module or not attribute or "/" in value:
                raise ConfigError(
                    f"{where} {key} = {value!r} is not module:function",
                    path=path,
                    hint=f'{key} of a callable model is "module:function" too, e.g. '
                    '"churn_rules_v2:score"',
                )
        elif kind_of(value) is None:
            raise ConfigError(
                f"{where} {key} = {value!r} is not a file Headwater can load",
                path=path,
                hint="an .onnx file (preferred), or .joblib (.pkl) for a scikit-learn estimator",
            )
    if model.function is not None:
        _check_model_function(where, model.function, path)
    for key, names in (("inputs", model.inputs), ("outputs", model.outputs)):
        if not names:
            raise ConfigError(f"{where} {key} is empty", path=path, hint=f"name the model's {key}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{where} {key} names {', '.join(twice)} twice", path=path)
    clash = [n for n in model.outputs if n in TAG_COLUMNS or n in model.inputs]
    if clash:
        raise ConfigError(
            f"{where} outputs names {', '.join(clash)}, a column scoring keeps already",
            path=path,
            hint=f"scored rows keep the inputs and add {', '.join(TAG_COLUMNS)}: rename the output",
        )
    if model.batch_rows is not None and model.batch_rows < 1:
        raise ConfigError(f"{where} batch_rows must be a positive number", path=path)


def _check_model_function(where: str, function: str, path: str) -> None:
    module, _, attribute = function.partition(":")
    if not (
        module and attribute.isidentifier() and all(p.isidentifier() for p in module.split("."))
    ):
        raise ConfigError(
            f"{where} function = {function!r} is not module:function",
            path=path,
            hint='e.g. function = "churn_rules:score" for models/churn_rules.py',
        )
