"""Read a request body within a byte limit, decompressing gzip as it arrives.

The limit applies to the decompressed bytes and is checked while reading, so a
gzip bomb costs at most ``limit`` bytes of memory before it is cut off.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from headwater.collect.errors import RequestRefused

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

# zlib's wbits: 16 + MAX_WBITS reads gzip; 32 + MAX_WBITS detects gzip or zlib.
_GZIP = 16 + zlib.MAX_WBITS
_DEFLATE = 32 + zlib.MAX_WBITS
_DECODERS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _DEFLATE}


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        413,
        "request_too_large",
        f"the request body is over {limit} bytes (after decompression); send smaller batches",
    )


def check_encoding(encoding: str) -> int | None:
    """The zlib ``wbits`` for a ``Content-Encoding``, or ``None`` for none."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in _DECODERS:
        return _DECODERS[encoding]
    raise RequestRefused(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding",
        keep=False,
    )


async def read_body(receive: Receive, limit: int, wbits: int | None) -> bytes:
    """The whole body, decompressed; 413 as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    inflater = _Inflater(wbits) if wbits is not None else None
    compressed = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if inflater is not None:
            compressed += len(chunk)
            if compressed > limit:
                raise too_large(limit)
            # Asking for one byte more than is left tells "over the limit" apart from
            # "exactly at it" without inflating the rest.
            chunk = inflater.feed(chunk, limit - size + 1)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    if inflater is not None:
        inflater.finish()
    return b"".join(parts)


class _Inflater:
    """A compressed body inflated as it arrives. It may be several members one after the
    other (RFC 1952; what concatenated ``gzip`` outputs are): each is read in turn. Zero
    bytes after one are padding (as ``gzip -d`` takes them); anything else after the end
    that does not start a member is refused (zlib finds no header there)."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._current = zlib.decompressobj(wbits)

    def feed(self, data: bytes, most: int) -> bytes:
        """``data`` inflated: at most ``most`` bytes (more would be over the limit)."""
        out: list[bytes] = []
        made = 0
        try:
            while data and made < most:
                if self._current.eof:
                    if not data.strip(b"\0"):
                        break  # padding
                    self._current = zlib.decompressobj(self._wbits)
                out.append(self._current.decompress(data, most - made))
                made += len(out[-1])
                data = self._current.unused_data if self._current.eof else b""
        except zlib.error as exc:
            raise _bad_gzip(exc) from None
        return b"".join(out)

    def finish(self) -> None:
        if not self._current.eof:
            raise _bad_gzip("the compressed stream ends early")


def _bad_gzip(reason: object) -> RequestRefused:
    return RequestRefused(
        400, "malformed_gzip", f"the body is not valid gzip ({reason}); compress the whole body"
    )
