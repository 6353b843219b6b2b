"""What ``headwater apply`` records of the working tree: its git commit, whether it has
changes not committed, and who applies it."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tree:
    """The git state of a project folder; ``commit`` is ``None`` outside a repository."""

    commit: str | None
    #: Files changed, added or removed and not committed (``git status --porcelain``).
    changes: list[str]

    @property
    def dirty(self) -> bool:
        return bool(self.changes)


def tree(folder: Path) -> Tree:
    """The commit checked out in ``folder`` and its uncommitted changes (files git ignores
    are not changes)."""
    git = shutil.which("git")
    if git is None:
        return Tree(None, [])
    head = _git(git, folder, "rev-parse", "--verify", "HEAD")
    if head is None:
        return Tree(None, [])
    status = _git(git, folder, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return Tree(head.strip(), [line[3:] for line in (status or "").splitlines() if line])


def _git(git: str, folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 (git, found on the PATH, with fixed arguments)
            [git, *args], cwd=folder, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def who(folder: Path) -> str:
    """Who applies: ``HEADWATER_APPLIED_BY``, else git's ``user.email``, else the login."""
    given = os.environ.get("HEADWATER_APPLIED_BY")
    if given:
        return given
    git = shutil.which("git")
    email = _git(git, folder, "config", "user.email") if git else None
    if email and email.strip():
        return email.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
