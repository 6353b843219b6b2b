"""Which source a write key belongs to.

The key comes as the user name of HTTP Basic auth (what the Segment libraries
send) or as ``writeKey`` in the body. Only SHA-256 digests are kept in memory.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from headwater.collect.errors import RequestRefused
from headwater.core.reload import Reloading
from headwater.core.secrets import KeyHash, digest

#: Reloads the sources' keys; returns ``None`` when nothing changed since last time.
KeyLoader = Callable[[], dict[str, KeyHash] | None]


class KeyRing:
    """Maps a presented write key to its source name.

    With a ``loader``, the ring follows ``headwater.toml``: ``headwater sources
    add`` works without a restart, and a removed key stops working.
    """

    def __init__(self, keys: dict[str, KeyHash], loader: KeyLoader | None = None) -> None:
        self._keys = Reloading(keys, loader)
        self._by_digest = _index(keys)

    def source_for(self, key: str | None) -> str:
        if not key:
            raise RequestRefused(
                401,
                "missing_write_key",
                "no write key; send it as the Basic-auth user name or as writeKey in the body",
                keep=False,
            )
        # Looked at on every request (at most once a second): a removed or
        # rotated key stops working as soon as the file says so.
        if self._keys.refresh():
            self._by_digest = _index(self._keys.value)
        source = self._by_digest.get(digest(key))
        if source is None:
            raise RequestRefused(
                401,
                "unknown_write_key",
                "the write key is not known; use a key printed by `headwater sources add`",
                keep=False,
            )
        return source


def _index(keys: dict[str, KeyHash]) -> dict[bytes, str]:
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
