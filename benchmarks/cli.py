"""CLI start-up benchmark: how long a command takes when it has little to do.

Run from the repository root::

    .venv/bin/python benchmarks/cli.py            # 15 runs of each command: about 1 minute
    .venv/bin/python benchmarks/cli.py --quick    # 3 runs of each: about 15 seconds

In a fresh project made by ``headwater init`` (its two example pipelines, no events),
after one ``headwater run --due`` that leaves nothing due, it times the whole wall clock
of each command, in turns so that noise on a shared machine falls on all alike:

- ``python -c "import duckdb"``: the floor, measured in the same run: a command that
  opens the embedded store cannot start faster than its engine imports;
- ``headwater --help``;
- ``headwater run --due`` with nothing due, no server running (the cron case);
- ``headwater status`` with no server running, and again while ``headwater up`` runs
  (the command only asks the server, over its control socket).

Each command's modules are listed by ``python -X importtime`` and checked against the
heavy ones (SQLAlchemy, sqlglot, DuckDB, Arrow, httpx, psycopg, FastAPI...): which of
them each command imports is printed beside its time.

Bytecode is kept as users' installs keep it (this machine sets PYTHONDONTWRITEBYTECODE,
which would make every start compile the package), in a cache inside the temporary
folder; the first run of each command fills it and is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Printed with the conditions and the results of a --quick run (tests look for it).
QUICK_NOTE = (
    "QUICK RUN (--quick): every command a few times, to check that the benchmark runs; "
    "its figures mean little"
)

TARGET_DUE_SECONDS = 0.3

#: Modules that cost a command tens of milliseconds each to import.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "sqlglot",
    "duckdb",
    "pyarrow",
    "pyarrow.compute",
    "numpy",
    "httpx",
    "psycopg",
    "fsspec",
    "fastapi",
    "starlette",
    "uvicorn",
)


@dataclass
class Command:
    label: str
    args: list[str]
    seconds: list[float] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    modules: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def child_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(TZ="UTC", NO_COLOR="1", TERM="dumb", COLUMNS="120")
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """The command's whole wall clock, and what it printed; fail loudly on an error."""
    started = time.perf_counter()
    done = subprocess.run(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        said = done.stdout + done.stderr
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{said}")
    return seconds, done.stdout + done.stderr


def imported(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[list[str], int]:
    """Which of :data:`HEAVY` the command imports, and how many modules in all."""
    done = subprocess.run(
        [args[0], "-X", "importtime", *args[1:]], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    names.discard("imported package")
    return [m for m in HEAVY if m in names], len(names)


@contextlib.contextmanager
def headwater_up(root: Path, env: dict[str, str], timeout: float = 60.0) -> Iterator[None]:
    """``headwater up`` on a free port until the block ends; ready once server.json is."""
    runtime = root / ".headwater" / "server.json"
    runtime.unlink(missing_ok=True)
    with (root / "server.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "headwater", "up", "--port", "0"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not runtime.exists():
            if process.poll() is not None:
                raise SystemExit(f"headwater up exited early:\n{(root / 'server.log').read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"headwater up did not start in {timeout:.0f} s")
            time.sleep(0.05)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def measure(commands: list[Command], runs: int, root: Path, env: dict[str, str]) -> None:
    for command in commands:
        run(command.args, root, env)  # fills the bytecode cache; not counted
        command.imported, command.modules = imported(command.args, root, env)
    for _ in range(runs):
        for command in commands:
            seconds, _ = run(command.args, root, env)
            command.seconds.append(seconds)


def bench(args: argparse.Namespace, work: Path) -> list[Command]:
    env = child_env(work)
    root = work / "project"
    headwater = [sys.executable, "-m", "headwater"]
    log("making a project with headwater init")
    run([*headwater, "init", str(root)], work, env)
    _, said = run([*headwater, "run", "--due"], root, env)
    if "Nothing is due" not in said:
        _, said = run([*headwater, "run", "--due"], root, env)
    if "Nothing is due" not in said:
        raise SystemExit(f"a second run --due still had work:\n{said}")

    floor = Command('python -c "import duckdb"', [sys.executable, "-c", "import duckdb"])
    alone = [
        floor,
        Command("headwater --help", [*headwater, "--help"]),
        Command("headwater run --due (nothing due)", [*headwater, "run", "--due"]),
        Command("headwater status", [*headwater, "status"]),
    ]
    log(f"{args.runs} runs of each command, in turns")
    measure(alone, args.runs, root, env)
    log("the same with headwater up running")
    with headwater_up(root, env):
        served = [
            Command("headwater status (asks the server)", [*headwater, "status"]),
            Command("headwater run --due (asks the server)", [*headwater, "run", "--due"]),
        ]
        measure(served, args.runs, root, env)
    return [*alone, *served]


def report(commands: list[Command], args: argparse.Namespace) -> None:
    floor, due = commands[0], commands[2]
    print()
    print("CLI start-up benchmark")
    print()
    print("Conditions")
    print(f"  {args.runs} runs of each command in turns, after one run that is not counted;")
    print(f"  Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; bytecode cached")
    if args.quick:
        print(f"  {QUICK_NOTE}")
    print()
    print("Wall time of each command, a project with nothing due")
    print(f"  {'command':<40} {'p50 s':>7} {'min s':>7} {'x duckdb':>9} {'modules':>8}  heavy")
    print(f"  {'-' * 40} {'-' * 7} {'-' * 7} {'-' * 9} {'-' * 8}  {'-' * 5}")
    for c in commands:
        heavy = ", ".join(c.imported) or "none"
        print(
            f"  {c.label:<40} {c.median:7.3f} {min(c.seconds):7.3f} "
            f"{c.median / floor.median:9.2f} {c.modules:8d}  {heavy}"
        )
    print()
    if args.quick:
        print(QUICK_NOTE)
        print()
    print("Targets")
    met = due.median <= TARGET_DUE_SECONDS
    print(
        f"  run --due, nothing due: {due.median:.3f} s, {due.median / floor.median:.2f}x "
        f'`python -c "import duckdb"` ({floor.median:.3f} s in this run)  '
        f"(target <= {TARGET_DUE_SECONDS:g} s)  {'MET' if met else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of each command")
    parser.add_argument("--runs", type=int, help="runs of each command (15)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 15
    work = Path(tempfile.mkdtemp(prefix="hw-cli-"))
    # A SIGTERM unwinds like Ctrl-C, so the server and the folder are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    try:
        commands = bench(args, work)
    finally:
        if args.keep:
            print(f"\nkept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(commands, args)
    print()
    print(f"(total {(datetime.now(UTC) - started).total_seconds():.0f} s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
