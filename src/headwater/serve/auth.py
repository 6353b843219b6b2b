"""Which consumer a bearer token belongs to, and what it may read.

Only SHA-256 digests of tokens are kept. Write keys are not tokens: a write key
sent here is unknown, so it reads nothing; tokens are unknown to the collector,
so they write nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from headwater.core.secrets import KeyHash, digest
from headwater.serve.errors import ApiError


@dataclass(frozen=True)
class Consumer:
    name: str
    datasets: frozenset[str]


#: Each consumer's token hash and the datasets it may read.
Tokens = Mapping[str, tuple[KeyHash, list[str]]]


class TokenSource(Protocol):
    """The consumers as they are now; ``fresh`` looks at ``headwater.toml`` at once."""

    def __call__(self, *, fresh: bool = False) -> Tokens: ...


class ConsumerRing:
    """Maps ``Authorization: Bearer <token>`` to a :class:`Consumer`.

    ``tokens`` gives the consumers as ``headwater.toml`` says now: new consumers
    work at once, and removed ones, or datasets taken away, stop working.
    """

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self._indexed = tokens()
        self._by_digest = _index(self._indexed)

    def consumer(self, authorization: str | None) -> Consumer:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "missing_token",
                "send the consumer's token as `Authorization: Bearer <token>`",
            )
        presented = digest(token.strip())
        consumer = self._lookup(presented, fresh=False)
        if consumer is None:
            # A consumer added a moment ago (`headwater consumers add`) works at once.
            consumer = self._lookup(presented, fresh=True)
        if consumer is None:
            raise ApiError(
                401,
                "unknown_token",
                "the token is not a consumer's; use one printed by `headwater consumers add`",
            )
        return consumer

    def _lookup(self, presented: bytes, *, fresh: bool) -> Consumer | None:
        tokens = self._tokens(fresh=fresh)
        if tokens is not self._indexed:
            self._indexed, self._by_digest = tokens, _index(tokens)
        return self._by_digest.get(presented)


def _index(consumers: Tokens) -> dict[bytes, Consumer]:
    return {
        key.digest: Consumer(name, frozenset(datasets))
        for name, (key, datasets) in consumers.items()
    }
