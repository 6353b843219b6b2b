"""Signed sessions and the CSRF tokens tied to them.

A session is a cookie holding the admin's name, a fingerprint of their token's
hash (a token removed or replaced in ``headwater.toml`` ends its sessions), an
expiry and a random nonce, signed with HMAC-SHA256. The CSRF token of a form
is an HMAC of that nonce: a page from another origin can neither read it nor
make it. The secret is the environment's (kept in the metadata, so every process
serving the dashboard agrees); a new one (``headwater admins end-sessions``)
signs everyone out within :data:`SECRET_SECONDS`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "headwater_session"
#: How long a process keeps the secret before reading it again.
SECRET_SECONDS = 5.0


@dataclass(frozen=True)
class Session:
    admin: str
    #: The first bytes of a hash of the admin's stored token hash, in hex.
    fingerprint: str
    expires: float
    nonce: str


def fingerprint(stored_digest: bytes) -> str:
    return hashlib.sha256(b"headwater-session:" + stored_digest).hexdigest()[:16]


class Sessions:
    """Makes and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: Callable[[], bytes], lifetime_seconds: float) -> None:
        """``secret`` reads the current secret (kept :data:`SECRET_SECONDS` at a time)."""
        self._read_secret = secret
        self._secret = b""
        self._read_at = -SECRET_SECONDS
        self._lock = threading.Lock()
        self.lifetime = lifetime_seconds

    def issue(self, admin: str, stored_digest: bytes) -> str:
        """A cookie value for ``admin``, valid for :attr:`lifetime` seconds."""
        body = {
            "a": admin,
            "f": fingerprint(stored_digest),
            "e": int(time.time() + self.lifetime),
            "n": secrets.token_hex(16),
        }
        data = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{data.decode()}.{self._sign(b'session:' + data)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, or ``None`` when it is forged, damaged or expired."""
        if not cookie or "." not in cookie:
            return None
        data, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(b"session:" + data.encode())):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data.encode()))
            session = Session(str(body["a"]), str(body["f"]), float(body["e"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def csrf(self, session: Session) -> str:
        """The CSRF token of every form of ``session``."""
        return self._sign(b"csrf:" + session.nonce.encode())

    def csrf_matches(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf(session))

    def _sign(self, data: bytes) -> str:
        return hmac.new(self._current(), data, hashlib.sha256).hexdigest()

    def _current(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._read_at >= SECRET_SECONDS:
                self._secret = self._read_secret()
                self._read_at = time.monotonic()
            return self._secret
