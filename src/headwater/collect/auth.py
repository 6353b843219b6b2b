"""Which source a write key belongs to.

The key comes as the user name of HTTP Basic auth (what the Segment libraries
send) or as ``writeKey`` in the body. Only SHA-256 digests are kept in memory.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Protocol

from headwater.collect.errors import RequestRefused
from headwater.core.secrets import KeyHash, digest


class Keys(Protocol):
    """The sources' keys as they are now (a new mapping when they change); ``fresh``
    looks at ``headwater.toml`` at once rather than at most once a second."""

    def __call__(self, *, fresh: bool = False) -> Mapping[str, KeyHash]: ...


class KeyRing:
    """Maps a presented write key to its source name.

    ``keys`` gives the keys as ``headwater.toml`` says now, so ``headwater
    sources add`` works without a restart, and a removed key stops working.
    """

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._indexed = keys()
        self._by_digest = _index(self._indexed)

    def source_for(self, key: str | None) -> str:
        if not key:
            raise RequestRefused(
                401,
                "missing_write_key",
                "no write key; send it as the Basic-auth user name or as writeKey in the body",
                keep=False,
            )
        # Looked at on every request: a removed or rotated key stops working as soon as
        # the file says so.
        presented = digest(key)
        source = self._lookup(presented, fresh=False)
        if source is None:
            # A key added a moment ago (`headwater sources add`) works at once.
            source = self._lookup(presented, fresh=True)
        if source is None:
            raise RequestRefused(
                401,
                "unknown_write_key",
                "the write key is not known; use a key printed by `headwater sources add`",
                keep=False,
            )
        return source

    def known(self, key: str | None) -> str | None:
        """The source of ``key``, or ``None`` when it is no source's (nothing is refused)."""
        if not key:
            return None
        presented = digest(key)
        return self._lookup(presented, fresh=False) or self._lookup(presented, fresh=True)

    def _lookup(self, presented: bytes, *, fresh: bool) -> str | None:
        keys = self._keys(fresh=fresh)
        if keys is not self._indexed:
            self._indexed, self._by_digest = keys, _index(keys)
        return self._by_digest.get(presented)


def _index(keys: Mapping[str, KeyHash]) -> dict[bytes, str]:
    return {key.digest: source for source, key in keys.items()}


def basic_user(header: bytes | None) -> str | None:
    """The user name of a ``Basic`` Authorization header, which Segment uses as the key."""
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None
