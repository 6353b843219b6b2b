"""One way to run Headwater in tests: a real ``headwater up`` process on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pyarrow as pa
import pytest

from headwater.cli.scaffold import init_project
from headwater.runtime.client import find_server
from headwater.store.duckdb import DuckDBEngine

HEADWATER = [sys.executable, "-m", "headwater"]
T = TypeVar("T")


def wait_for(
    what: str,
    check: Callable[[], T],
    timeout: float = 15.0,
    *,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something true, and return that; fail after
    ``timeout`` seconds, saying what was awaited (and ``detail()``, such as a server log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{more}")
        time.sleep(0.05)


@dataclass
class Project:
    """A project folder made by ``headwater init``, and its source's write key."""

    root: Path
    key: str

    @property
    def data_dir(self) -> Path:
        return self.root / ".headwater"

    def configure(self, text: str) -> None:
        """Append TOML to headwater.toml (e.g. a [collector] table)."""
        path = self.root / "headwater.toml"
        path.write_text(path.read_text() + "\n" + text)

    def query(self, sql: str, *params: object) -> pa.Table:
        """Ask the running server, or open the store when none runs."""
        client = find_server(self.data_dir)
        if client is not None:
            try:
                return client.query(sql, params)
            finally:
                client.close()
        engine = DuckDBEngine.open(self.data_dir / "events.duckdb", read_only=True)
        try:
            return engine.query(sql, params)
        finally:
            engine.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self, *args, check=check)


def run_cli(
    where: Project | Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``headwater --project ROOT ARGS`` as a child process, with a terminal wide enough for
    whole table rows and no environment choice inherited from the caller; with ``check``,
    a failure shows the command's output."""
    root = where.root if isinstance(where, Project) else where
    env = {k: v for k, v in os.environ.items() if k not in ("HEADWATER_DEBUG", "HEADWATER_ENV")}
    result = subprocess.run(
        [*HEADWATER, "--project", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "3000"},
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"headwater {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (word, rest), continuation lines joined, comments
    left out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest))
            pending = ""
    return out


@dataclass
class Server:
    """A ``headwater up`` child process."""

    project: Project
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    log: Path = field(default_factory=Path)

    def start(self, timeout: float = 30.0) -> Server:
        runtime = self.project.data_dir / "server.json"
        runtime.unlink(missing_ok=True)
        self.log = self.project.root / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*HEADWATER, "--project", str(self.project.root), "up", "--port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"headwater up exited early:\n{self.log.read_text()}")
            if runtime.exists():
                self.url = json.loads(runtime.read_text())["url"]
                return self
            time.sleep(0.05)
        raise RuntimeError(f"headwater up did not start in {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        with self.client() as client:
            return client.post(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    key = init_project(root)
    return Project(root=root, key=key)


@pytest.fixture
def server(project: Project) -> Iterator[Server]:
    running = Server(project).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("shared") / "project"
    key = init_project(root)
    return Project(root=root, key=key)


@pytest.fixture(scope="module")
def shared_server(shared_project: Project) -> Iterator[Server]:
    """One server for a whole test module, for tests that only add events."""
    running = Server(shared_project).start()
    yield running
    running.stop()
