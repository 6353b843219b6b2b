"""One run per pipeline at a time, across threads and processes.

A lease is a row in the metadata database with an owner and an expiry. Each
run is its own owner (host, process and a token), renews the lease while it
works, and releases it when done. A run killed with SIGKILL cannot release it:
on the same host its process is seen to be gone and the lease is taken over at
once; elsewhere it expires within :data:`TTL`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from types import TracebackType

from headwater.process.errors import RunInterrupted
from headwater.process.metadata import MetadataStore

TTL = timedelta(seconds=60)
log = logging.getLogger(__name__)
_HOST = socket.gethostname()


def new_owner() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str) -> bool:
    """Whether ``owner`` was a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    """Hold a pipeline's lease for the ``with`` block, renewing it in the background."""

    def __init__(self, metadata: MetadataStore, pipeline: str, ttl: timedelta = TTL) -> None:
        self.metadata = metadata
        self.pipeline = pipeline
        self.ttl = ttl
        self.owner = new_owner()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="lease-renewer")

    def __enter__(self) -> Lease:
        if not self.metadata.acquire(self.pipeline, self.owner, self.ttl, dead=owner_dead):
            raise RunInterrupted(self.pipeline, "another run holds it; try again when it ends")
        self._renewer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._renewer.join()
        self.metadata.release(self.pipeline, self.owner)

    def _renew(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self.metadata.renew(self.pipeline, self.owner, self.ttl):
                    log.error("%s: lost its lease; another run may start", self.pipeline)
            except Exception:  # a busy metadata database: try again next time
                log.exception("%s: could not renew the lease", self.pipeline)
