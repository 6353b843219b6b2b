"""Admins: `headwater admins add` prints a token once, keeps its hash, and the token
is an admin's only: not a consumer's, not a write key."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.serve.auth import AdminRing, AdminTokens, ConsumerRing, Tokens
from headwater.serve.errors import ApiError
from tests.conftest import Project


def _token(printed: str) -> str:
    return next(word for word in printed.split() if word.startswith("hw_at_"))


def _rings(project: Project) -> tuple[AdminRing, ConsumerRing]:
    def admins(*, fresh: bool = False) -> AdminTokens:
        return load_project(project.root).admin_tokens()

    def consumers(*, fresh: bool = False) -> Tokens:
        return load_project(project.root).consumer_tokens()

    return AdminRing(admins), ConsumerRing(consumers)


def test_admins_add_prints_the_token_once_and_stores_only_its_hash(project: Project) -> None:
    printed = project.cli("admins", "add", "alice").stdout
    token = _token(printed)
    assert printed.count(token) == 1
    config = (project.root / "headwater.toml").read_text()
    assert token not in config
    stored = tomllib.loads(config)["admins"]["alice"]
    assert stored == {"token": "sha256:" + hashlib.sha256(token.encode()).hexdigest()}
    listed = project.cli("admins", "list").stdout
    assert "alice" in listed
    assert "stored hashed" in listed
    assert token not in listed

    again = project.cli("admins", "add", "alice", check=False)
    assert again.returncode != 0
    assert "already exists" in again.stdout + again.stderr


def test_an_admin_token_opens_admin_doors_only(project: Project) -> None:
    token = _token(project.cli("admins", "add", "alice").stdout)
    admins, consumers = _rings(project)
    assert admins.admin(token) == "alice"
    assert admins.authorize(f"Bearer {token}") == "alice"
    assert admins.admin(project.key) is None  # a write key is not an admin's token
    with pytest.raises(ApiError) as refused:
        consumers.consumer(f"Bearer {token}")
    assert refused.value.status == 401
    for authorization in (None, "", "Bearer", f"Basic {token}", "Bearer hw_at_unknown"):
        with pytest.raises(ApiError) as refused:
            admins.authorize(authorization)
        assert refused.value.status == 401


def test_an_admin_added_after_the_ring_was_built_works_at_once(project: Project) -> None:
    admins, _ = _rings(project)
    token = _token(project.cli("admins", "add", "bob").stdout)
    assert admins.admin(token) == "bob"


def test_a_token_written_in_clear_is_a_load_error(project: Project) -> None:
    with (project.root / "headwater.toml").open("a") as file:
        file.write('\n[admins.carol]\ntoken = "hw_at_in-clear"\n')
    with pytest.raises(ConfigError) as error:
        load_project(project.root)
    assert "[admins.carol] token" in str(error.value)
    assert "headwater admins add" in (error.value.hint or "")
