"""Session cookies and CSRF tokens: what a forger, an old cookie or a new secret gets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.dashboard import sessions as sessions_module
from headwater.dashboard.pages.signin import _next
from headwater.dashboard.sessions import Sessions
from headwater.state.admin_actions import SessionSecret
from headwater.state.database import StateStore

STORED = b"\x01" * 32


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[SessionSecret]:
    """The environment's secret, in a real metadata database."""
    state = StateStore.in_folder(tmp_path)
    yield state.session_secret
    state.close()


def test_a_session_reads_back_and_nothing_else_does(secret: SessionSecret) -> None:
    sessions = Sessions(secret.get, 60)
    cookie = sessions.issue("alice", STORED)
    session = sessions.read(cookie)
    assert session is not None
    assert session.admin == "alice"
    assert sessions.csrf_matches(session, sessions.csrf(session))
    assert not sessions.csrf_matches(session, None)
    data, _, signature = cookie.rpartition(".")
    # Another admin's name in the same signature, a cut signature, garbage: no session.
    forged = sessions.issue("bob", STORED).rpartition(".")[0] + "." + signature
    for bad in (forged, data + "." + signature[:-2], "", "x.y", None, data):
        assert sessions.read(bad) is None
    # Two sessions never share a CSRF token.
    other = sessions.read(sessions.issue("alice", STORED))
    assert other is not None
    assert sessions.csrf(other) != sessions.csrf(session)


def test_sessions_expire(secret: SessionSecret) -> None:
    sessions = Sessions(secret.get, -1)
    assert sessions.read(sessions.issue("alice", STORED)) is None


def test_a_new_secret_signs_everyone_out(
    secret: SessionSecret, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read again at every use here, rather than every few seconds.
    monkeypatch.setattr(sessions_module, "SECRET_SECONDS", 0.0)
    made = secret.get()
    assert secret.get() == made  # made once, then kept
    assert len(made) == 32
    sessions = Sessions(secret.get, 60)
    cookie = sessions.issue("alice", STORED)
    # Another process of the same environment reads the same secret: the session holds.
    other = StateStore.in_folder(tmp_path)
    try:
        assert Sessions(other.session_secret.get, 60).read(cookie) is not None
        other.session_secret.replace()
    finally:
        other.close()
    assert sessions.read(cookie) is None


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/live?type=track", "/live?type=track"),
        ("/", "/"),
        ("//evil.test/x", "/"),
        ("/\\evil.test", "/"),
        ("https://evil.test/", "/"),
        ("javascript:alert(1)", "/"),
        (None, "/"),
    ],
)
def test_sign_in_sends_back_only_to_this_site(asked: str | None, sent_to: str) -> None:
    assert _next(asked) == sent_to
