"""The webhook sink: batched, signed JSON POSTs with an idempotency key each.

A batch's body is::

    {"pipeline": "...", "sink": "...", "interval": {"start": "...", "end": "..."},
     "run": 12, "batch": 0, "batches": 3, "rows": [{...}, ...]}

and its request carries

- ``Idempotency-Key``: the same for every attempt at the same batch of the
  same run (also after a crash and a resume), so a receiver can drop repeats;
- ``Headwater-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 with the
  sink's secret over ``<t>.`` followed by the body, so a receiver can check
  who sent it and refuse old replays by ``t``.

2xx is delivered. 5xx, 429, timeouts and connection errors are retried (a
``Retry-After`` is honoured); any other answer, a redirect included (they are
not followed), cannot be fixed by retrying and is dead-lettered at once.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import time
from collections.abc import Callable, Collection, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa

from headwater import __version__
from headwater.core import jsonio
from headwater.core.secrets import environment_value
from headwater.core.types import Interval
from headwater.deliver import jsonrows
from headwater.deliver.guard import AddressRefused, Checked, NotResolved, Resolver, resolve
from headwater.deliver.settings import WebhookSink

SIGNATURE = "Headwater-Signature"
IDEMPOTENCY = "Idempotency-Key"


@dataclass(frozen=True)
class Outcome:
    """What one POST came to."""

    delivered: bool
    retry: bool
    reason: str | None = None
    retry_after: float | None = None


def idempotency_key(
    pipeline: str, sink: str, start: datetime, run_id: int, batch: int, scope: str = ""
) -> str:
    """The key of one batch of one run's output: the same at every attempt.

    ``scope`` names the environment (empty for the default one): run ids are
    counted per environment, so two environments' batches must not share keys.
    """
    text = f"{pipeline}\x00{sink}\x00{start.isoformat()}\x00{run_id}\x00{batch}"
    if scope:
        text += f"\x00{scope}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value.

    >>> sign("s3cret", 1700000000, b"{}")
    't=1700000000,v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf'
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def batches(table: pa.Table, rows: int) -> list[pa.Table]:
    """The output cut into batches of at most ``rows`` (one empty batch for no rows)."""
    if table.num_rows == 0:
        return [table]
    return [table.slice(offset, rows) for offset in range(0, table.num_rows, rows)]


def body(
    pipeline: str, sink: str, interval: Interval, run_id: int, batch: int, total: int,
    rows: pa.Table,
) -> bytes:  # fmt: skip
    payload: dict[str, Any] = {
        "pipeline": pipeline,
        "sink": sink,
        "interval": {"start": interval.start, "end": interval.end},
        "run": run_id,
        "batch": batch,
        "batches": total,
        "rows": jsonrows.rows(rows),
    }
    return jsonio.dumps(payload)


def made_ahead(make: Callable[[int], bytes], indices: range) -> Generator[bytes, None, None]:
    """``make(i)`` for each of ``indices`` in turn, the next made in a thread while the
    caller posts this one: the receiver's answer is awaited with the GIL released, so a
    body's making hides behind the POST before it. An error making one is raised when it
    is taken, where making it in turn would have raised it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-body") as pool:
        upcoming = [pool.submit(make, i) for i in indices[:1]]
        for i in indices:
            payload = upcoming.pop().result()
            if i + 1 < indices.stop:
                upcoming.append(pool.submit(make, i + 1))
            yield payload


class WebhookTarget:
    """POSTs batches to one URL, checked against the address rules (again at the first
    send a second after the last check)."""

    def __init__(
        self,
        name: str,
        settings: WebhookSink,
        allow_hosts: Collection[str],
        *,
        resolver: Resolver = resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``resolver`` and ``clock``: how the host is resolved, and the clock that ages
        its checked addresses (see :class:`~headwater.deliver.guard.Checked`)."""
        self.name = name
        self.settings = settings
        self.url = environment_value(settings.url, where=f"[sinks.{name}] url")
        self._secret = environment_value(settings.secret, where=f"[sinks.{name}] secret")
        self._checked = Checked(self.url, allow_hosts, resolver, clock=clock)
        self._client = httpx.Client(
            timeout=settings.timeout_seconds,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the peer
            headers={"user-agent": f"headwater/{__version__}"},
        )

    def send(self, payload: bytes, key: str) -> Outcome:
        """POST one batch; raises :class:`AddressRefused` when the host may not be reached."""
        try:
            target = self._checked.target()
        except NotResolved as exc:
            return Outcome(False, True, str(exc))
        headers = {
            "host": target.host,
            "content-type": "application/json",
            IDEMPOTENCY: key,
            SIGNATURE: sign(self._secret, int(time.time()), payload),
        }
        extensions = {"sni_hostname": target.hostname}
        failure = "no address to connect to"
        for url in target.urls:  # the next address only when this one refused to connect
            request = self._client.build_request(
                "POST", url, content=payload, headers=headers, extensions=extensions
            )
            deadline = time.monotonic() + self.settings.timeout_seconds
            try:
                response = self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = f"could not connect: {exc or type(exc).__name__}"
                continue
            except httpx.TimeoutException:
                return Outcome(False, True, f"no answer within {self.settings.timeout_seconds:g}s")
            except httpx.TransportError as exc:
                return Outcome(False, True, f"the connection failed: {exc or type(exc).__name__}")
            try:
                text = _body_until(response, deadline)
            finally:
                response.close()
            return _outcome(target.host, response, text)
        return Outcome(False, True, failure)

    def close(self) -> None:
        self._client.close()


def _outcome(host: str, response: httpx.Response, text: str) -> Outcome:
    """What the receiver's answer means; ``text``: as much of its body as was read."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, False)
    answer = f"{host} answered {status}: {_excerpt(text)}"
    if status == 429 or status >= 500:
        return Outcome(False, True, answer, _retry_after(response))
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return Outcome(
            False,
            False,
            f"{host} answered {status}, a redirect to {where}, which is not followed; "
            "set the sink's url to the final address",
        )
    return Outcome(False, False, answer)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


#: Bytes of an answer's body kept for its excerpt; the rest is read only to keep the
#: connection (an answer of 2xx), and not past the deadline.
_KEPT = 4096


def _body_until(response: httpx.Response, deadline: float) -> str:
    """The start of ``response``'s body, read until it ends or ``deadline`` passes: the
    status is the answer, and a receiver that sends its body a byte at a time must not
    hold the delivery (and every delivery queued behind it) past ``timeout_seconds``. A
    body left unread closes the connection. A read in progress at the deadline still
    waits up to the timeout, so an answer takes at most twice ``timeout_seconds``."""
    kept = bytearray()
    try:
        for chunk in response.iter_bytes():
            if len(kept) < _KEPT:
                kept += chunk[: _KEPT - len(kept)]
            elif not response.is_success:
                break  # enough of an error's body for its excerpt
            if time.monotonic() > deadline:
                break
    except httpx.HTTPError:
        pass  # the status arrived; a body cut short or timed out does not change it
    return kept.decode(response.encoding or "utf-8", errors="replace")


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = [
    "AddressRefused",
    "Outcome",
    "WebhookTarget",
    "batches",
    "body",
    "idempotency_key",
    "made_ahead",
]
