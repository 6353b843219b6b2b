"""Write keys and tokens: generated once, shown once, stored hashed.

Keys are 192 random bits, so a single SHA-256 is enough to store them: a slow
password hash protects guessable secrets, and these cannot be guessed. A key in
``headwater.toml`` is either ``"sha256:<hex>"`` or a reference ``"${ENV_NAME}"``
to an environment variable that holds the key itself (how a container platform
injects secrets).

>>> key = new_key("wk")
>>> KeyHash.parse(hash_key(key)).matches(key)
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from typing import Literal

from headwater.core.errors import ConfigError

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_HASHED = re.compile(r"^sha256:([0-9a-f]{64})$")


def new_key(kind: str) -> str:
    """A fresh key such as ``hw_wk_…``; ``kind`` says what it opens."""
    return f"hw_{kind}_{secrets.token_urlsafe(24)}"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hash_key(key: str) -> str:
    """The form of ``key`` that is safe to write into ``headwater.toml``."""
    return "sha256:" + digest(key).hex()


def stored_form(stored: str) -> Literal["hashed", "environment"] | None:
    """How a key is written in ``headwater.toml``; ``None`` when it is neither allowed form."""
    if _HASHED.match(stored):
        return "hashed"
    if _ENV_REF.match(stored):
        return "environment"
    return None


def environment_value(stored: str, *, where: str) -> str:
    """The value of ``"${NAME}"`` from the environment; any other text as it is."""
    match = _ENV_REF.match(stored)
    if match is None:
        return stored
    name = match.group(1)
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"{where} refers to the environment variable {name}, which is not set",
            hint=f"export {name}=<value> in the environment of the process that needs it "
            "(`headwater up` when one runs: restart it with the variable set)",
        )
    return value


def is_environment_reference(stored: str) -> bool:
    return _ENV_REF.match(stored) is not None


def reference_name(stored: str) -> str | None:
    """The variable a ``"${NAME}"`` reference names; ``None`` for anything else.

    >>> reference_name("${DATABASE_URL}"), reference_name("postgresql://db")
    ('DATABASE_URL', None)
    """
    match = _ENV_REF.match(stored)
    return match.group(1) if match else None


class KeyHash:
    """A stored key: its SHA-256, from a hash or from an environment variable."""

    __slots__ = ("digest",)

    def __init__(self, key_digest: bytes) -> None:
        self.digest = key_digest

    @classmethod
    def parse(cls, stored: str, *, where: str = "write_key") -> KeyHash:
        if match := _HASHED.match(stored):
            return cls(bytes.fromhex(match.group(1)))
        if _ENV_REF.match(stored):
            return cls(digest(environment_value(stored, where=where)))
        raise ConfigError(
            f'{where} must be a hash ("sha256:…") or an environment reference ("${{NAME}}")',
            hint="create keys with `headwater sources add NAME`, which stores only the hash",
        )

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.digest, digest(key))
