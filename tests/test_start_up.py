"""A command imports what it needs, not every stage's libraries.

Each command's modules are read from ``python -X importtime``: a module list, not a
timing, so the check holds on a loaded machine too. The heavy libraries cost tens of
milliseconds each; a command that imports one it does not use is slower for nothing.
benchmarks/cli.py measures the times.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import Project, Server

#: The libraries of the stages: the metadata database, SQL, the engines, Arrow, HTTP
#: clients and servers, the sinks.
HEAVY = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "sqlglot",
        "duckdb",
        "pyarrow",
        "numpy",
        "httpx",
        "psycopg",
        "fsspec",
        "fastapi",
        "starlette",
        "uvicorn",
    }
)


def imported(project: Project, *args: str) -> set[str]:
    """The top-level packages ``headwater *args`` imports, run in ``project``."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "headwater", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_imports_no_stage(project: Project) -> None:
    assert imported(project, "--help") & HEAVY == set()


def test_commands_that_ask_the_server_import_no_stage(project: Project, server: Server) -> None:
    """``status`` and ``run --due`` only ask the server over its control socket."""
    assert imported(project, "status") & HEAVY == set()
    assert imported(project, "run", "--due") & HEAVY == set()


def test_a_due_pass_here_imports_no_sink_it_does_not_use(project: Project) -> None:
    """With nothing to deliver, no sink's client library (nor a server's) is imported."""
    (project.root / "pipelines" / "constant.sql").write_text(
        '/* headwater\nschedule = "@daily"\nkind = "full"\n*/\nSELECT 1 AS one\n'
    )
    found = imported(project, "run", "--due")  # runs constant: a whole pass
    assert "sqlglot" in found
    assert found & {"httpx", "psycopg", "fsspec", "fastapi", "starlette", "uvicorn"} == set()


def test_a_due_pass_that_finds_what_the_last_found_imports_no_stage(project: Project) -> None:
    """Nothing changed and nothing fell due since a pass that found nothing: the answer is
    the one that pass remembered (runtime/idle.py), and nothing is opened."""
    project.cli("run", "--due")
    assert imported(project, "run", "--due") & HEAVY == set()
