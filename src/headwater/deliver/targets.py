"""The sinks as ``headwater.toml`` says now, and the open connection to each.

A target (a folder, a database, a webhook's HTTP client) is kept while its
sink's settings stay the same, and made anew when they change, so an edited
sink takes effect at the next delivery without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from headwater.deliver.guard import Resolver, resolve
from headwater.deliver.settings import DeliverySettings, FilesSink, PostgresSink, Sink

# Each kind of target is imported when a sink of its kind is first used: fsspec, psycopg
# and httpx cost a command that delivers nothing a fifth of a second to import.
if TYPE_CHECKING:
    from typing import TypeAlias

    from headwater.deliver.files import FilesTarget
    from headwater.deliver.postgres import PostgresTarget
    from headwater.deliver.webhook import WebhookTarget

    Target: TypeAlias = FilesTarget | PostgresTarget | WebhookTarget


@dataclass(frozen=True)
class Sinks:
    """The sinks as ``headwater.toml`` says now, and where relative paths start."""

    root: Path
    sinks: Mapping[str, Sink]
    settings: DeliverySettings
    #: The environment (empty for the default): part of every idempotency key.
    scope: str = ""


class Targets:
    """One target per sink, made when first needed and again when its settings change."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self._resolver = resolver
        #: name -> the sink's settings as JSON, its target, and the webhook's client to close.
        self._targets: dict[str, tuple[bytes, Target, WebhookTarget | None]] = {}

    def get(self, name: str, sink: Sink, config: Sinks) -> Target:
        stamp = msgspec.json.encode(sink) + msgspec.json.encode(config.settings)
        cached = self._targets.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if cached is not None and cached[2] is not None:
            cached[2].close()
        target: Target
        client = None
        if isinstance(sink, FilesSink):
            from headwater.deliver.files import FilesTarget

            target = FilesTarget(name, sink, config.root)
        elif isinstance(sink, PostgresSink):
            from headwater.deliver.postgres import PostgresTarget

            target = PostgresTarget(name, sink)
        else:
            from headwater.deliver.webhook import WebhookTarget

            target = client = WebhookTarget(
                name, sink, config.settings.allow_hosts, resolver=self._resolver
            )
        self._targets[name] = (stamp, target, client)
        return target

    def close(self) -> None:
        for _, _, client in self._targets.values():
            if client is not None:
                client.close()
        self._targets.clear()
