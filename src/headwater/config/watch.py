"""The one watcher of ``headwater.toml``: a running process follows the file without a
restart.

``headwater sources add`` and ``headwater consumers add`` edit the file while
a server runs; a removed key or token must stop working, and a new sink or
setting must take effect. Everything that follows the file reads it through
one :class:`ProjectWatch`, which looks at the file at most once a second,
loads it again (in the same environment) when it changed, and keeps the last
project that loaded when the new one does not (logged once per change), so a
file being edited never stops a running server.

Values derived from the project (the keys' digests, the sinks, the graph)
are computed again only when the project changed: see :meth:`derived`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from headwater.config.project import Project, load_project
from headwater.core.errors import HeadwaterError

T = TypeVar("T")
log = logging.getLogger(__name__)

_AT_MOST_EVERY = 1.0


class ProjectWatch:
    """The project as ``headwater.toml`` says now; a reload makes a new :class:`Project`."""

    def __init__(self, project: Project, *, every: float = _AT_MOST_EVERY) -> None:
        self._project = project
        self._every = every
        self._stamp = _stamp(project)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self, *, fresh: bool = False) -> Project:
        """The project, loaded again first when the file changed (looked at once a second;
        ``fresh``: looked at now, for a caller that just met something unknown, such as a
        key added a moment ago; a look is a ``stat``, a load happens only on a change)."""
        now = time.monotonic()
        if not fresh and now - self._checked < self._every:
            return self._project
        with self._lock:
            if not fresh and now - self._checked < self._every:
                return self._project
            self._checked = now
            stamp = _stamp(self._project)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._project = load_project(self._project.root, self._project.environment)
                except HeadwaterError as exc:
                    log.error("headwater.toml does not load; keeping the settings before: %s", exc)
            return self._project

    def derived(self, read: Callable[[Project], T]) -> Derived[T]:
        """``read`` of the current project, computed again only when the project changed; if
        it fails then (an environment variable a new key refers to is not set), the value
        before stays and the failure is logged."""
        return Derived(self, read)


class Derived(Generic[T]):
    """A value computed from the project, again when the project changed."""

    def __init__(self, watch: ProjectWatch, read: Callable[[Project], T]) -> None:
        self._watch = watch
        self._read = read
        self._source = watch.current()
        self._value = read(self._source)

    def __call__(self, *, fresh: bool = False) -> T:
        # Compared by identity with the project the value came from (each reload makes a
        # new one), so a reload between two reads cannot pair a value with the wrong one.
        project = self._watch.current(fresh=fresh)
        if project is not self._source:
            try:
                self._value = self._read(project)
            except HeadwaterError as exc:
                log.warning("kept the current settings: %s", exc)
            self._source = project
        return self._value


def _stamp(project: Project) -> tuple[int, int]:
    try:
        info = project.file.stat()
    except OSError:
        return (0, 0)
    return (info.st_mtime_ns, info.st_size)
