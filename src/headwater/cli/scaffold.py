"""What ``headwater init`` writes: a project that runs as it is."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from headwater.config.file import FILENAME
from headwater.core.errors import ConfigError
from headwater.core.secrets import hash_key, new_key

TEMPLATE = """\
# Headwater project. Every key is optional unless marked; defaults are shown.
# Every table and key: docs/ in the Headwater repository (events, pipelines, api).

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

[pipelines]
folder = "pipelines"         # one pipeline per .sql or .py file
tick_seconds = 10            # how often `headwater up` looks for due intervals

# Where pipelines deliver their output besides the store; a pipeline names its
# sinks in its header: sinks = ["files"]. Other types: "postgres", "webhook".
[sinks.files]
type = "files"
url = "exports"              # a folder here, or an fsspec URL such as "gs://bucket/prefix"
format = "parquet"           # or "csv", "jsonl"; one file per interval, replaced atomically

# One table per source. Keys are stored hashed; `headwater sources add NAME`
# creates one and prints the key once. A key may also be "${{ENV_NAME}}".
[sources.{source}]
write_key = "{key_hash}"
"""

#: Example pipelines, in BigQuery SQL: what `headwater init` puts in pipelines/.
EXAMPLE_PIPELINES = {
    "hourly_event_counts.sql": """\
/* headwater
description = "Events per name and source, per hour of arrival."
schedule = "@hourly"
kind = "incremental"
time = "received_at"       # intervals by arrival: exact, each hour runs once
time_column = "hour"
key = ["hour", "source", "event_name"]   # rows by key in the read API
sinks = ["files"]          # each hour also lands in exports/hourly_event_counts/
audits = [
  { not_null = ["hour", "source", "event_name"] },
  { unique = ["hour", "source", "event_name"] },
]
*/
SELECT
  TIMESTAMP_TRUNC(received_at, HOUR) AS hour,
  source,
  COALESCE(event, type) AS event_name,
  COUNT(*) AS events,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour, source, event_name
""",
    "daily_active_users.sql": """\
/* headwater
description = "Distinct people active per day of event time, with their plan."
schedule = "@daily"
kind = "incremental"
time = "timestamp"         # event time: late events re-open the day they belong to
time_column = "day"
key = ["day", "plan"]
audits = [
  { not_null = ["day"] },
  { unique = ["day", "plan"] },
]
*/
SELECT
  TIMESTAMP_TRUNC(timestamp, DAY) AS day,
  COALESCE(JSON_VALUE(properties, '$.plan'), 'unknown') AS plan,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS active_users,
  COUNT(*) AS events
FROM events
WHERE timestamp >= @start AND timestamp < @end
GROUP BY day, plan
""",
}

GITIGNORE = """\
# Headwater's data folder: the event store, metadata and runtime files.
.headwater/
# Files delivered by the example's files sink.
exports/
"""


def init_project(folder: Path, *, source: str = "web") -> str:
    """Create a project in ``folder`` and return the new source's write key.

    The project also gets the example pipelines; :func:`add_consumer` gives it a
    consumer of the read API.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / FILENAME
    if config.exists():
        raise ConfigError(
            f"{config} already exists",
            hint="run `headwater up` there, or choose another folder",
        )
    key = new_key("wk")
    name = folder.resolve().name or "headwater"
    write_private(config, TEMPLATE.format(name=name, source=source, key_hash=hash_key(key)))
    gitignore = folder / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE, encoding="utf-8")
    pipelines = folder / "pipelines"
    pipelines.mkdir(exist_ok=True)
    for name, text in EXAMPLE_PIPELINES.items():
        if not (pipelines / name).exists():
            (pipelines / name).write_text(text, encoding="utf-8")
    return key


def examples_folder() -> Path:
    """Where the example projects are: in the installed package (the wheel carries the
    repository's ``examples/``), else in the repository this module is checked out in."""
    installed = Path(__file__).resolve().parents[1] / "examples"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[3] / "examples"


def examples() -> list[str]:
    """The example projects ``headwater init --example`` can copy."""
    folder = examples_folder()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / FILENAME).is_file())


def init_example(folder: Path, example: str, *, source: str = "app") -> str:
    """Copy the example project ``example`` into ``folder`` (without what its scripts make:
    trained models, data), give it a source, and return the source's write key."""
    known = examples()
    if example not in known:
        raise ConfigError(
            f"there is no example {example!r}",
            hint=f"examples: {', '.join(known) or 'none in this installation'}",
        )
    config = folder / FILENAME
    if config.exists():
        raise ConfigError(f"{config} already exists", hint="choose another folder for the example")
    ignored = shutil.ignore_patterns("*.onnx", "*.joblib", "*.csv", "__pycache__", ".headwater")
    shutil.copytree(examples_folder() / example, folder, ignore=ignored, dirs_exist_ok=True)
    if not (folder / ".gitignore").exists():
        (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (folder / "models").mkdir(exist_ok=True)
    return add_source(config, source)


def add_source(config: Path, name: str) -> str:
    """Append ``[sources.NAME]`` with a new hashed key; return the key."""
    key = new_key("wk")
    text = config.read_text(encoding="utf-8")
    separator = "" if text.endswith("\n") else "\n"
    write_private(config, f'{text}{separator}\n[sources.{name}]\nwrite_key = "{hash_key(key)}"\n')
    return key


def add_consumer(config: Path, name: str, datasets: list[str]) -> str:
    """Append ``[consumers.NAME]`` with a new hashed token; return the token."""
    token = new_key("ct")
    text = config.read_text(encoding="utf-8")
    separator = "" if text.endswith("\n") else "\n"
    listed = ", ".join(f'"{d}"' for d in datasets)
    write_private(
        config,
        f'{text}{separator}\n[consumers.{name}]\ntoken = "{hash_key(token)}"\n'
        f"datasets = [{listed}]\n",
    )
    return token


def add_admin(config: Path, name: str) -> str:
    """Append ``[admins.NAME]`` with a new hashed token; return the token."""
    token = new_key("at")
    text = config.read_text(encoding="utf-8")
    separator = "" if text.endswith("\n") else "\n"
    write_private(config, f'{text}{separator}\n[admins.{name}]\ntoken = "{hash_key(token)}"\n')
    return token


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole, readable by its owner only.

    ``headwater.toml`` names the sources and consumers and holds their keys' hashes:
    owner-only from the moment it exists (not chmod-ed after), and a running server
    that reads it while it is rewritten sees the old file or the new one.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
