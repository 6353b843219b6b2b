"""What ``headwater init`` writes: a project that runs as it is."""

from __future__ import annotations

from pathlib import Path

from headwater.config.project import FILENAME
from headwater.core.errors import ConfigError
from headwater.core.secrets import hash_key, new_key

TEMPLATE = """\
# Headwater project. Every key is optional unless marked; defaults are shown.
# Reference: docs/configuration.md in the Headwater repository.

[project]
name = "{name}"
data_dir = ".headwater"      # the store, metadata and runtime files
dialect = "bigquery"         # the SQL dialect of pipelines/*.sql

[server]
host = "127.0.0.1"           # "0.0.0.0" inside a container
port = 8787

[collector]
max_event_bytes = 32768
max_request_bytes = 512000   # after decompression
max_batch_events = 2500
dedupe_window = "7d"         # exact dedupe by (source, messageId) over this window

[store]
engine = "duckdb"
path = "events.duckdb"       # inside data_dir

# One table per source. Keys are stored hashed; `headwater sources add NAME`
# creates one and prints the key once. A key may also be "${{ENV_NAME}}".
[sources.{source}]
write_key = "{key_hash}"
"""

GITIGNORE = """\
# Headwater's data folder: the event store, metadata and runtime files.
.headwater/
"""


def init_project(folder: Path, *, source: str = "web") -> str:
    """Create a project in ``folder`` and return the new source's write key."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / FILENAME
    if config.exists():
        raise ConfigError(
            f"{config} already exists",
            hint="run `headwater up` there, or choose another folder",
        )
    key = new_key("wk")
    name = folder.resolve().name or "headwater"
    config.write_text(
        TEMPLATE.format(name=name, source=source, key_hash=hash_key(key)), encoding="utf-8"
    )
    gitignore = folder / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE, encoding="utf-8")
    (folder / "pipelines").mkdir(exist_ok=True)
    return key


def add_source(config: Path, name: str) -> str:
    """Append ``[sources.NAME]`` with a new hashed key; return the key."""
    key = new_key("wk")
    text = config.read_text(encoding="utf-8")
    separator = "" if text.endswith("\n") else "\n"
    config.write_text(
        f'{text}{separator}\n[sources.{name}]\nwrite_key = "{hash_key(key)}"\n', encoding="utf-8"
    )
    return key
