"""Send 28 days of product events for a few hundred users to a running Headwater.

    python simulate.py http://127.0.0.1:8787 hw_wk_...

Each user has an engagement level; the least engaged drift away and some of them send
"Subscription Cancelled". Deterministic: the same events every time (message ids too,
so sending twice stores them once).
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

USERS = 300
DAYS = 28


def events(today: datetime, users: int = USERS, seed: int = 14) -> list[dict[str, Any]]:
    """Segment track events over the ``DAYS`` days before ``today`` (midnight, UTC)."""
    rng = random.Random(seed)  # noqa: S311 - made-up data, not secrets
    start = today - timedelta(days=DAYS)
    found: list[dict[str, Any]] = []
    for number in range(users):
        user = f"u{number:04d}"
        engagement = rng.random()
        # The least engaged stop coming back partway through, and often cancel.
        last_day = DAYS if engagement > 0.35 else rng.randrange(3, DAYS - 3)
        cancels = engagement < 0.35 and rng.random() < 0.8
        for day in range(last_day):
            if rng.random() > 0.25 + 0.7 * engagement:
                continue
            for session in range(1 + int(4 * engagement * rng.random())):
                at = start + timedelta(days=day, hours=rng.randrange(24), minutes=session)
                found.append(_track(user, "Session Started", at, f"{user}-{day}-{session}-s"))
                for view in range(rng.randrange(1, 6)):
                    moment = at + timedelta(seconds=30 * (view + 1))
                    found.append(
                        _track(user, "Page Viewed", moment, f"{user}-{day}-{session}-{view}")
                    )
        if cancels:
            at = start + timedelta(days=last_day, hours=rng.randrange(24))
            found.append(_track(user, "Subscription Cancelled", at, f"{user}-cancel"))
    return found


def _track(user: str, name: str, at: datetime, message_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": user,
        "messageId": message_id,
        "timestamp": at.isoformat(),
        "properties": {},
    }


def send(url: str, write_key: str, batch: list[dict[str, Any]], size: int = 500) -> int:
    """Post ``batch`` to the collector in requests of ``size``; the events accepted."""
    accepted = 0
    with httpx.Client(base_url=url, auth=(write_key, ""), timeout=30) as client:
        for offset in range(0, len(batch), size):
            answer = client.post("/v1/batch", json={"batch": batch[offset : offset + size]})
            answer.raise_for_status()
            accepted += int(answer.json()["accepted"])
    return accepted


if __name__ == "__main__":
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sent = events(midnight)
    print(f"{send(sys.argv[1], sys.argv[2], sent)} of {len(sent)} events accepted")
