"""The one place that touches the JSON library.

msgspec decodes and validates UTF-8, number ranges and syntax in C; everything
else in Headwater goes through these two functions so that the choice of
library stays a detail.

>>> loads(dumps({"a": [1, "x"]}))
{'a': [1, 'x']}
"""

from __future__ import annotations

from typing import Any

import msgspec

JSONDecodeError = msgspec.DecodeError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON bytes (non-finite floats become ``null``)."""
    return _encoder.encode(value)


def dumps_str(value: Any) -> str:
    """Encode ``value`` as a compact JSON string."""
    return _encoder.encode(value).decode()


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes or text into Python values."""
    return _decoder.decode(data)
