"""Session cookies and CSRF tokens: what a forger, an old cookie or a new secret gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headwater.core.errors import ConfigError
from headwater.dashboard.pages.signin import _next
from headwater.dashboard.sessions import SECRET_FILE, Sessions, load_secret

STORED = b"\x01" * 32


def test_a_session_reads_back_and_nothing_else_does(tmp_path: Path) -> None:
    sessions = Sessions(load_secret(tmp_path), 60)
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


def test_sessions_expire(tmp_path: Path) -> None:
    sessions = Sessions(load_secret(tmp_path), -1)
    assert sessions.read(sessions.issue("alice", STORED)) is None


def test_a_new_secret_signs_everyone_out(tmp_path: Path) -> None:
    cookie = Sessions(load_secret(tmp_path), 60).issue("alice", STORED)
    assert load_secret(tmp_path) == load_secret(tmp_path)  # made once, then kept
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / SECRET_FILE).unlink()
    assert Sessions(load_secret(tmp_path), 60).read(cookie) is None


def test_a_damaged_secret_file_says_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("not hex")
    with pytest.raises(ConfigError) as raised:
        load_secret(tmp_path)
    assert raised.value.hint is not None
    assert "delete" in raised.value.hint
    assert os.listdir(tmp_path) == [SECRET_FILE]


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
