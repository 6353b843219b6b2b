"""Signed sessions and the CSRF tokens tied to them, with a secret kept per data folder.

A session is a cookie holding the admin's name, a fingerprint of their token's
hash (a token removed or replaced in ``headwater.toml`` ends its sessions), an
expiry and a random nonce, signed with HMAC-SHA256. The CSRF token of a form
is an HMAC of that nonce: a page from another origin can neither read it nor
make it. Rotating the secret (deleting the file) signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from headwater.core.errors import ConfigError

SECRET_FILE = "dashboard.secret"  # noqa: S105 (a file name)
COOKIE = "headwater_session"


@dataclass(frozen=True)
class Session:
    admin: str
    #: The first bytes of a hash of the admin's stored token hash, in hex.
    fingerprint: str
    expires: float
    nonce: str


def load_secret(folder: Path) -> bytes:
    """The signing secret of ``folder``, made the first time (readable by its owner only)."""
    path = folder / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise ConfigError(
            f"{path} is not a dashboard secret",
            hint=f"delete {path}: a new one is made (everyone signs in again)",
        ) from None
    fresh = secrets.token_bytes(32)
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(fresh.hex())
    try:
        # Two processes starting together: the first link wins, both use its secret.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def fingerprint(stored_digest: bytes) -> str:
    return hashlib.sha256(b"headwater-session:" + stored_digest).hexdigest()[:16]


class Sessions:
    """Makes and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, lifetime_seconds: float) -> None:
        self._secret = secret
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
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()
