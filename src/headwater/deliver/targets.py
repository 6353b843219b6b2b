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

from headwater.deliver.files import FilesTarget
from headwater.deliver.guard import Resolver, resolve
from headwater.deliver.settings import DeliverySettings, FilesSink, PostgresSink, Sink
from headwater.deliver.webhook import WebhookTarget

if TYPE_CHECKING:
    from typing import TypeAlias

    from headwater.deliver.postgres import PostgresTarget

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
        self._targets: dict[str, tuple[bytes, Target]] = {}

    def get(self, name: str, sink: Sink, config: Sinks) -> Target:
        stamp = msgspec.json.encode(sink) + msgspec.json.encode(config.settings)
        cached = self._targets.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if cached is not None and isinstance(cached[1], WebhookTarget):
            cached[1].close()
        target: Target
        if isinstance(sink, FilesSink):
            target = FilesTarget(name, sink, config.root)
        elif isinstance(sink, PostgresSink):
            # psycopg (about 25 MB) is loaded when a PostgreSQL sink is first used.
            from headwater.deliver.postgres import PostgresTarget

            target = PostgresTarget(name, sink)
        else:
            target = WebhookTarget(name, sink, config.settings.allow_hosts, resolver=self._resolver)
        self._targets[name] = (stamp, target)
        return target

    def close(self) -> None:
        for _, target in self._targets.values():
            if isinstance(target, WebhookTarget):
                target.close()
        self._targets.clear()
