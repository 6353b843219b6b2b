"""One holder at a time, across threads and processes, with fenced writes.

A lease is a row in the metadata database: a name (a pipeline's runs, or a
pipeline and sink's deliveries), an owner, an expiry and a fencing token. Each
holder renews its lease while it works and releases it when done. A holder
killed with SIGKILL cannot release it: on the same host its process is seen to
be gone and the lease is taken over at once; elsewhere it expires within its
time to live.

Expiry alone cannot keep two holders apart: a process that stalls (a long
garbage collection, SIGSTOP, a paused VM) past its expiry wakes up believing
it still holds the lease while another has taken over. So every new holder
gets a larger **fencing token**, and the writes that matter carry it: the
engine refuses to publish an interval with a token smaller than one it has
already seen for that name, and the metadata records a run or a delivery's
progress only while the row still holds the writer's token. Whoever stalled
finds its work refused, and at most one holder wins.

Tokens are microseconds since the epoch when taken (or the last token plus
one, if larger), so they keep growing even if the metadata database is made
anew beside an engine that remembers older tokens.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import sqlalchemy as sa

from headwater.core.clock import EPOCH, to_us, utc_now
from headwater.state.errors import LeaseHeld, LeaseLost
from headwater.state.tables import leases
from headwater.store.engine import Fence

TTL = timedelta(seconds=60)
log = logging.getLogger(__name__)
_HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease, with which token: what a fenced write names."""

    name: str
    owner: str
    token: int


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


# The statements a run makes on its lease, built once: building one costs as much as
# SQLite running it. Bound by name: ``held_*`` is the holding a write names.
_HOLDING = (
    (leases.c.pipeline == sa.bindparam("held_name"))
    & (leases.c.owner == sa.bindparam("held_owner"))
    & (leases.c.token == sa.bindparam("held_token"))
)
_CURRENT = sa.select(leases.c.owner, leases.c.expires_at, leases.c.token).where(
    leases.c.pipeline == sa.bindparam("held_name")
)
_STILL_HELD = sa.select(leases.c.token).where(_HOLDING).with_for_update(read=True)
_RELEASE = leases.update().where(_HOLDING).values(expires_at=EPOCH)
_RENEW = leases.update().where(_HOLDING).values(expires_at=sa.bindparam("until"))
_TAKE_OVER = (
    leases.update()
    .where(_HOLDING)
    .values(
        owner=sa.bindparam("new_owner"),
        expires_at=sa.bindparam("until"),
        token=sa.bindparam("new_token"),
    )
)


def _holding(holder: Holder) -> dict[str, object]:
    return {"held_name": holder.name, "held_owner": holder.owner, "held_token": holder.token}


def still_held(db: sa.Connection, holder: Holder) -> bool:
    """Inside a write transaction: whether ``holder`` still holds its lease, with the lease's
    row locked against a takeover until the transaction ends (``FOR SHARE`` on PostgreSQL,
    whose takeover's ``UPDATE`` then waits; SQLite runs one writer at a time anyway). A
    write made after this answered ``True`` lands before any new holder's."""
    return db.execute(_STILL_HELD, _holding(holder)).first() is not None


def release_in(db: sa.Connection, holder: Holder) -> None:
    """Inside a write transaction: free ``holder``'s lease at once (the row stays, with its
    token, so the next holder's is larger)."""
    db.execute(_RELEASE, _holding(holder))


class Leases:
    """The lease rows: take, renew, release."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def acquire(
        self,
        name: str,
        owner: str,
        ttl: timedelta,
        dead: Callable[[str], bool] = lambda _owner: False,
        then: Callable[[sa.Connection], None] | None = None,
    ) -> int | None:
        """Take the lease if it is free, expired, or held by a ``dead`` owner; return the new
        fencing token, or ``None`` when someone else holds it. ``then`` runs in the same
        transaction once the lease is taken (a run's first records)."""
        now = utc_now()
        with self.engine.begin() as db:
            current = db.execute(_CURRENT, {"held_name": name}).first()
            if current is None:
                token = to_us(now)
                try:
                    with db.begin_nested():
                        db.execute(
                            leases.insert().values(
                                pipeline=name, owner=owner, expires_at=now + ttl, token=token
                            )
                        )
                except sa.exc.IntegrityError:
                    return None
                if then is not None:
                    then(db)
                return token
            if current.expires_at >= now and not dead(current.owner):
                return None
            token = max(int(current.token) + 1, to_us(now))
            # Compare and set: only if the lease is still as we judged it.
            taken = db.execute(
                _TAKE_OVER,
                {
                    "held_name": name,
                    "held_owner": current.owner,
                    "held_token": current.token,
                    "new_owner": owner,
                    "until": now + ttl,
                    "new_token": token,
                },
            )
            if not taken.rowcount:
                return None
            if then is not None:
                then(db)
            return token

    def renew(self, holder: Holder, ttl: timedelta) -> bool:
        """Extend a lease this holder holds; ``False`` if it was taken over."""
        with self.engine.begin() as db:
            renewed = db.execute(_RENEW, {**_holding(holder), "until": utc_now() + ttl})
            return bool(renewed.rowcount)

    def release(self, holder: Holder) -> None:
        """Free the lease at once. The row stays, with its token, so the next holder's is
        larger."""
        with self.engine.begin() as db:
            release_in(db, holder)

    def held(self, holder: Holder) -> bool:
        with self.engine.begin() as db:
            return still_held(db, holder)


class Lease:
    """Hold a lease for the ``with`` block, renewing it in the background.

    ``fence`` and ``holder`` name this holding in the writes it fences;
    :meth:`check` raises :class:`LeaseLost` once a renewal found the lease
    taken over, so long work can stop early.
    """

    def __init__(
        self,
        book: Leases,
        name: str,
        ttl: timedelta = TTL,
        then: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        """``then`` runs in the transaction that takes the lease."""
        self.book = book
        self.name = name
        self.ttl = ttl
        self.owner = new_owner()
        self.token = 0
        self.lost = False
        #: Released by the holder's last write (:func:`release_in`): nothing left to release.
        self.released = False
        self._then = then
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="lease-renewer")

    @property
    def holder(self) -> Holder:
        return Holder(self.name, self.owner, self.token)

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.token)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another holder has taken the lease over."""
        if self.lost:
            raise LeaseLost(self.name, self.token)

    def __enter__(self) -> Lease:
        token = self.book.acquire(self.name, self.owner, self.ttl, dead=owner_dead, then=self._then)
        if token is None:
            raise LeaseHeld(self.name)
        self.token = token
        self._renewer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_renewing()
        if self.lost or self.released:
            return
        try:
            self.book.release(self.holder)
        except Exception:
            # The work is done (or has failed on its own account); an unreleased lease
            # only expires later.
            log.exception("%s: could not release the lease; it expires by itself", self.name)

    def stop_renewing(self) -> None:
        """Renew no more: before a last write that releases the lease, so no renewal can
        come after it and hold the lease again."""
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()

    def _renew(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self.book.renew(self.holder, self.ttl):
                    self.lost = True
                    log.error("%s: lost its lease; another holder took over", self.name)
                    return
            except Exception:  # a busy metadata database: try again next time
                log.exception("%s: could not renew the lease", self.name)


class Waiting:
    """Enter ``lease``, waiting while another holds it (up to ``seconds``, then
    :class:`LeaseHeld` as without waiting)."""

    def __init__(
        self, lease: Lease, seconds: float, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.lease = lease
        self.seconds = seconds
        self.sleep = sleep

    def __enter__(self) -> Lease:
        waited = 0.0
        while True:
            try:
                return self.lease.__enter__()
            except LeaseHeld:
                if waited >= self.seconds:
                    raise
                self.sleep(1.0)
                waited += 1.0

    def __exit__(self, *exc: object) -> None:
        self.lease.__exit__(None, None, None)
