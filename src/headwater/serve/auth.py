"""Who a bearer token belongs to: a consumer (and what it may read) or an admin.

Only SHA-256 digests of tokens are kept. Write keys are not tokens: a write key
sent here is unknown, so it reads nothing; tokens are unknown to the collector,
so they write nothing. Consumer tokens and admin tokens are told apart by the
table of ``headwater.toml`` that holds their digest, so neither opens the other's
doors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from headwater.core.secrets import KeyHash, digest
from headwater.serve.errors import ApiError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Consumer:
    name: str
    datasets: frozenset[str]


#: Each consumer's token hash and the datasets it may read.
Tokens = Mapping[str, tuple[KeyHash, list[str]]]
#: Each admin's token hash.
AdminTokens = Mapping[str, KeyHash]


class Source(Protocol[T_co]):
    """The holders as they are now; ``fresh`` looks at ``headwater.toml`` at once."""

    def __call__(self, *, fresh: bool = False) -> T_co: ...


#: The consumers as they are now.
TokenSource = Source[Tokens]


class _Ring(Generic[T]):
    """Digest -> holder, rebuilt when ``headwater.toml`` changes. A digest not found is
    looked up again in the file as it is this moment, so a holder added a moment ago
    works at once; one removed stops working at the watcher's next look."""

    def __init__(self, source: Source[T], index: Callable[[T], dict[bytes, object]]) -> None:
        self._source = source
        self._index = index
        self._indexed = source()
        self._by_digest = index(self._indexed)

    def find(self, token: str) -> object | None:
        presented = digest(token)
        for fresh in (False, True):
            held = self._source(fresh=fresh)
            if held is not self._indexed:
                self._indexed, self._by_digest = held, self._index(held)
            if (found := self._by_digest.get(presented)) is not None:
                return found
        return None


def bearer(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ConsumerRing:
    """Maps ``Authorization: Bearer <token>`` to a :class:`Consumer`.

    ``tokens`` gives the consumers as ``headwater.toml`` says now: new consumers
    work at once, and removed ones, or datasets taken away, stop working.
    """

    def __init__(self, tokens: TokenSource) -> None:
        self._ring = _Ring(tokens, _consumers)

    def consumer(self, authorization: str | None) -> Consumer:
        token = bearer(authorization)
        if token is None:
            raise ApiError(
                401,
                "missing_token",
                "send the consumer's token as `Authorization: Bearer <token>`",
            )
        consumer = self._ring.find(token)
        if not isinstance(consumer, Consumer):
            raise ApiError(
                401,
                "unknown_token",
                "the token is not a consumer's; use one printed by `headwater consumers add`",
            )
        return consumer


class AdminRing:
    """Maps an admin's token (``headwater admins add``) to the admin's name."""

    def __init__(self, tokens: Source[AdminTokens]) -> None:
        self._ring = _Ring(tokens, _admins)

    def admin(self, token: str) -> str | None:
        """The admin ``token`` belongs to, or ``None``."""
        found = self._ring.find(token)
        return found if isinstance(found, str) else None

    def authorize(self, authorization: str | None) -> str:
        """The admin of ``Authorization: Bearer <token>``; 401 otherwise."""
        token = bearer(authorization)
        if token is None:
            raise ApiError(
                401, "missing_token", "send an admin's token as `Authorization: Bearer <token>`"
            )
        admin = self.admin(token)
        if admin is None:
            raise ApiError(
                401,
                "unknown_token",
                "the token is not an admin's; create one with `headwater admins add NAME`",
            )
        return admin


def _consumers(consumers: Tokens) -> dict[bytes, object]:
    return {
        key.digest: Consumer(name, frozenset(datasets))
        for name, (key, datasets) in consumers.items()
    }


def _admins(admins: AdminTokens) -> dict[bytes, object]:
    return {key.digest: name for name, key in admins.items()}
