"""The files sink: one Parquet, CSV or JSON-lines file per interval, replaced atomically.

Each interval of a pipeline is one file, ``<url>/<pipeline>/<start>.<ext>``
(a full pipeline: ``<url>/<pipeline>/<pipeline>.<ext>``), so replacing an
interval is replacing one file. The file is written under a hidden temporary
name, then renamed over the old one: on a local disk after an fsync (a
rename is atomic), on an object store (``gs://``) by a server-side copy,
which creates the new object whole. Either way a reader sees the old file or
the new one, never part of one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

from headwater.core import jsonio
from headwater.core.extras import MissingExtra
from headwater.core.types import Interval
from headwater.deliver.errors import SinkRefused, SinkUnavailable
from headwater.deliver.settings import FilesSink

EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}
_JSON_CHUNK = 10_000


class FilesTarget:
    """Writes a pipeline's intervals as files under one folder or bucket prefix."""

    def __init__(self, name: str, settings: FilesSink, root: Path) -> None:
        self.name = name
        self.settings = settings
        url = settings.url
        if "://" not in url:
            url = str((root / url).resolve())
        try:
            self.fs, self.base = fsspec.core.url_to_fs(url, **settings.storage_options)
        except ImportError as exc:
            if url.startswith(("gs://", "gcs://")):
                raise MissingExtra("gcs", f"the files sink {name} on {url}", "gcsfs") from None
            raise SinkRefused(
                f"its url {settings.url!r} needs a package that is not installed ({exc})",
                sink=name,
                hint="install the fsspec backend of that URL's scheme",
            ) from None
        except ValueError as exc:
            raise SinkRefused(f"its url {settings.url!r} is not usable: {exc}", sink=name) from None
        self.local = "file" in _protocols(self.fs)

    def path(self, pipeline: str, interval: Interval | None) -> str:
        """Where an interval's file goes (``interval=None``: a full pipeline's one file)."""
        ext = EXTENSIONS[self.settings.format]
        name = pipeline if interval is None else f"{interval.start:%Y%m%dT%H%M%SZ}"
        return f"{self.base.rstrip('/')}/{pipeline}/{name}.{ext}"

    def write(self, pipeline: str, interval: Interval | None, table: pa.Table) -> str:
        """Write ``table`` as the interval's file, replacing any earlier one; return its path."""
        path = self.path(pipeline, interval)
        try:
            with self._open(path) as out:
                _encode(self.settings.format, table, out)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SinkRefused(
                f"{self.settings.format} cannot hold this output ({exc})",
                hint='use format = "parquet" or "jsonl" for nested columns',
                sink=self.name,
                pipeline=pipeline,
                interval=interval,
            ) from None
        except OSError as exc:
            raise SinkUnavailable(
                f"writing {path} failed: {exc}",
                sink=self.name,
                pipeline=pipeline,
                interval=interval,
            ) from None
        return path

    @contextmanager
    def _open(self, path: str) -> Iterator[IO[bytes]]:
        folder = path.rpartition("/")[0]
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.{path.rpartition('/')[2]}.{uuid.uuid4().hex}.tmp"
        if not self.local:
            # fsspec finishes an upload even when the writer raised, so the object is
            # written under a hidden name and moved (a server-side copy) only when whole.
            try:
                with self.fs.open(temporary, "wb") as out:
                    yield out
                self.fs.mv(temporary, path)
            finally:
                if self.fs.exists(temporary):
                    self.fs.rm(temporary)
            return
        try:
            with open(temporary, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)


def _encode(fmt: str, table: pa.Table, out: IO[bytes]) -> None:
    if fmt == "parquet":
        pq.write_table(table, out, compression="zstd")
    elif fmt == "csv":
        pa.csv.write_csv(table, out)
    else:
        for batch in table.to_batches(_JSON_CHUNK):
            for row in batch.to_pylist():
                out.write(jsonio.dumps(row))
                out.write(b"\n")


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
