"""Which consumer a bearer token belongs to, and what it may read.

Only SHA-256 digests of tokens are kept. Write keys are not tokens: a write key
sent here is unknown, so it reads nothing; tokens are unknown to the collector,
so they write nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from headwater.core.reload import Reloading
from headwater.core.secrets import KeyHash, digest
from headwater.serve.errors import ApiError


@dataclass(frozen=True)
class Consumer:
    name: str
    datasets: frozenset[str]


Tokens = dict[str, tuple[KeyHash, list[str]]]


class ConsumerRing:
    """Maps ``Authorization: Bearer <token>`` to a :class:`Consumer`.

    With a ``loader``, the ring follows ``headwater.toml``: new consumers work at
    once, and removed ones, or datasets taken away, stop working.
    """

    def __init__(
        self, consumers: Tokens, loader: Callable[[], Tokens | None] | None = None
    ) -> None:
        self._tokens = Reloading(consumers, loader)
        self._by_digest = _index(consumers)

    def consumer(self, authorization: str | None) -> Consumer:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "missing_token",
                "send the consumer's token as `Authorization: Bearer <token>`",
            )
        if self._tokens.refresh():
            self._by_digest = _index(self._tokens.value)
        consumer = self._by_digest.get(digest(token.strip()))
        if consumer is None:
            raise ApiError(
                401,
                "unknown_token",
                "the token is not a consumer's; use one printed by `headwater consumers add`",
            )
        return consumer


def _index(consumers: Tokens) -> dict[bytes, Consumer]:
    return {
        key.digest: Consumer(name, frozenset(datasets))
        for name, (key, datasets) in consumers.items()
    }
