"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` and ``pg_ctl`` in a
temporary folder, listening on a free loopback port, password (SCRAM) authentication.

When the tests run as root (as in containers), the server runs as the ``postgres``
user, which PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, or where Debian puts them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Tests trade durability for speed; a benchmark passes its own settings.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "max_connections": "50"}


@contextmanager
def postgres_server(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server for the ``with`` block; stop it and delete its files after.

    ``settings`` are server settings (``-c name=value``), :data:`TEST_SETTINGS` by default.
    """
    folder = binaries()
    if folder is None:
        raise RuntimeError(
            "PostgreSQL's server binaries are missing: apt-get install -y postgresql"
        )
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    temp = Path(tempfile.mkdtemp(prefix="headwater-pg-"))
    data, password = temp / "data", secrets.token_urlsafe(16)
    pwfile = temp / "pw"
    pwfile.write_text(password)
    if as_root:
        user = pwd.getpwnam("postgres")
        for path in (temp, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, env=env, timeout=120)

    try:
        run(str(folder / "initdb"), "-D", str(data), "-U", "headwater", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8")  # fmt: skip
        chosen = TEST_SETTINGS if settings is None else settings
        options = " ".join(
            [
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={temp}",
                *(f"-c {name}={value}" for name, value in chosen.items()),
            ]
        )
        run(str(folder / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(temp / "log"),
            "-w", "-t", "60", "start")  # fmt: skip
        yield PostgresServer("127.0.0.1", port, "headwater", password)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(temp, ignore_errors=True)
