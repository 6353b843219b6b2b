"""The rendered image's commands, run for real: what ``docker build`` and Cloud Run would do.

There is no Docker daemon here, so a fresh virtual environment stands in for the image:
the steps of the rendered Dockerfile are done by hand, in its order, on this machine
(Linux x86_64, CPython 3.11 like ``python:3.11-slim``):

1. a wheel of this checkout is built, and ``headwater deploy lock --wheel`` pins it and
   everything it needs by hash (``requirements.lock``, the wheel kept in ``wheels/``);
2. ``headwater deploy render`` writes the Dockerfile and the Cloud Run resources;
3. ``python -m venv`` (no system site packages) is the base image; the Dockerfile's
   ``COPY`` lines copy the project into an app folder, and its ``RUN pip install`` line
   runs with that environment's own pip (without ``--no-cache-dir``, so pip's cache
   serves the packages: a warm cache keeps this under a minute);
4. the Dockerfile's ``ENTRYPOINT`` + ``CMD`` start the collector from that environment,
   with only the host (127.0.0.1) and the port (a free one) changed, on a throwaway
   PostgreSQL server; ``/readyz``, ``/healthz`` and the Dockerfile's ``HEALTHCHECK``
   command answer, and an event is accepted;
5. the Cloud Run job's command (``due.job.yaml``) exits 0 from that environment.

What this does not cover: the base image's own Debian, the non-root user and Cloud Run
itself.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from headwater.cli.scaffold import init_project
from tests.conftest import dockerfile_instructions, run_cli, wait_for
from tests.pg import _free_port, binaries, postgres_server

REPO = Path(__file__).resolve().parents[1]
PROD = """
[environments.prod.store]
engine = "postgres"
url = "${DATABASE_URL}"
"""

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Image:
    """The stand-in for the built image: its app folder, environment and instructions."""

    app: Path
    venv: Path
    env: dict[str, str]
    dockerfile: list[tuple[str, str]]
    job: list[str]
    key: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as the image would run it: its first word from the environment's bin."""
        return [str(self.venv / "bin" / argv[0]), *argv[1:]]

    def instruction(self, word: str) -> str:
        return next(rest for w, rest in self.dockerfile if w == word)


def _run(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                            check=False)  # fmt: skip
    assert result.returncode == 0, f"{shlex.join(argv)} exited {result.returncode}\n{result.stderr}"
    return result


def _copy(root: Path, app: Path, rest: str) -> None:
    """One ``COPY [--chown=...] SRC DEST`` into ``app`` (the image's WORKDIR)."""
    words = [w for w in rest.split() if not w.startswith("--")]
    *sources, dest = words
    for source in sources:
        target = app / dest.removeprefix("./")
        if (root / source).is_dir():
            shutil.copytree(root / source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / source, target if not dest.endswith("/") else target / source)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    assert binaries(), "PostgreSQL's server binaries are missing: apt-get install postgresql"
    with postgres_server() as server:
        yield server.create_database("image")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, database: str) -> Image:
    tmp = tmp_path_factory.mktemp("image")
    root = tmp / "project"
    key = init_project(root)
    with (root / "headwater.toml").open("a", encoding="utf-8") as toml:
        toml.write(PROD)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"),
          str(REPO)])  # fmt: skip
    (wheel,) = (tmp / "dist").glob("headwater-*.whl")
    run_cli(root, "deploy", "lock", "--wheel", str(wheel))
    run_cli(root, "deploy", "render", "--env", "prod", "--target", "cloudrun", "--image",
            "europe-west1-docker.pkg.dev/acme/hw/headwater:1", "--region", "europe-west1",
            "--project-id", "acme")  # fmt: skip
    deployed = root / "deploy" / "prod"
    steps = dockerfile_instructions((deployed / "Dockerfile").read_text(encoding="utf-8"))

    # FROM python:3.11-slim
    assert steps[0] == ("FROM", f"python:{sys.version_info.major}.{sys.version_info.minor}-slim")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    app = tmp / "app"
    app.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp), "LC_ALL": "C.UTF-8"}
    for word, rest in steps[1:]:
        if word == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(rest))
        elif word == "COPY":
            _copy(root, app, rest)
        elif word == "RUN" and rest.startswith("pip install"):
            # pip's cache, configuration and mirrors are this machine's (the image turns the
            # cache off only to keep it out of a layer; PIP_NO_CACHE_DIR turns it off
            # whatever its value, so it is left out).
            argv = [a for a in shlex.split(rest) if a != "--no-cache-dir"]
            pip_env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
            pip_env |= {k: v for k, v in env.items() if k != "PIP_NO_CACHE_DIR"}
            pip_env |= {"PIP_CACHE_DIR": _pip_cache(), "HOME": str(Path.home())}
            _run(argv, cwd=app, env=pip_env)
    job = yaml.safe_load((deployed / "due.job.yaml").read_text(encoding="utf-8"))
    container = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
    return Image(app, venv, env, steps, [*container["command"], *container["args"]], key)


def _pip_cache() -> str:
    found = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    return found.stdout.strip() or str(Path.home() / ".cache" / "pip")


@pytest.fixture(scope="module")
def collector(image: Image, database: str) -> Iterator[str]:
    """The Dockerfile's ENTRYPOINT + CMD, on 127.0.0.1 and a free port; its URL."""
    entrypoint = json.loads(image.instruction("ENTRYPOINT"))
    cmd = json.loads(image.instruction("CMD"))
    port = _free_port()
    argv = [*entrypoint, *cmd]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    log = image.app / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            image.command(argv),
            cwd=image.app,
            env=image.env | {"DATABASE_URL": database},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, f"the collector exited:\n{log.read_text()}"
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the collector's /readyz", ready, timeout=60, detail=log.read_text)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _healthcheck(image: Image, port: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, against ``port`` instead of 8080."""
    rest = image.instruction("HEALTHCHECK")
    argv = json.loads(rest[rest.index("CMD ") + 4 :])
    argv = [a.replace("127.0.0.1:8080/", f"127.0.0.1:{port}/") for a in argv]
    return subprocess.run(image.command(argv), env=image.env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


def test_the_lock_pins_every_package_and_the_wheel_by_hash(image: Image) -> None:
    lock = (image.app / "requirements.lock").read_text(encoding="utf-8")
    pins = [line.split()[0] for line in lock.splitlines() if "==" in line]
    assert "headwater==0.1.0" in pins
    assert {"duckdb", "psycopg", "psycopg-binary", "uvicorn"} <= {p.split("==")[0] for p in pins}
    assert lock.count("--hash=sha256:") == len(pins)
    assert "--find-links ./wheels" in lock
    assert list((image.app / "wheels").glob("headwater-0.1.0-*.whl"))
    # Installed from the wheel, not from this checkout.
    where = _run(image.command(["python", "-c", "import headwater; print(headwater.__file__)"]),
                 env=image.env, cwd=image.app).stdout  # fmt: skip
    assert where.startswith(str(image.venv)), where


def test_the_entrypoint_serves_readyz_healthz_and_events(image: Image, collector: str) -> None:
    assert httpx.get(f"{collector}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{collector}/healthz", timeout=5).status_code == 200
    sent = httpx.post(f"{collector}/v1/track", auth=(image.key, ""), timeout=10,
                      json={"userId": "u1", "event": "Deployed", "messageId": "m-1"})  # fmt: skip
    assert sent.status_code == 200, sent.text


def test_the_healthcheck_command_passes_only_while_the_server_answers(
    image: Image, collector: str
) -> None:
    port = collector.rsplit(":", 1)[1]
    assert _healthcheck(image, port).returncode == 0
    closed = _healthcheck(image, str(_free_port()))
    assert closed.returncode != 0
    assert "Connection refused" in closed.stderr


def test_the_jobs_command_runs_the_due_pass(image: Image, database: str) -> None:
    assert image.job == ["headwater", "--env", "prod", "run", "--due"]
    started = time.monotonic()
    done = subprocess.run(image.command(image.job), cwd=image.app, timeout=120, check=False,
                          env=image.env | {"DATABASE_URL": database}, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60


def test_the_lock_refuses_what_it_cannot_pin_and_says_how(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root)
    (root / "requirements.in").write_text("headwater[bigquery]==0.1.0\nscikit-learn\n")
    other = run_cli(root, "deploy", "lock", "--extras", "gcs", check=False)
    assert other.returncode == 1
    assert "requirements.in exists and does not ask for headwater[gcs]==0.1.0" in other.stderr
    assert "edit its headwater line" in other.stderr
    not_a_wheel = tmp_path / "headwater-0.1.0.tar.gz"
    not_a_wheel.write_bytes(b"")
    refused = run_cli(root, "deploy", "lock", "--wheel", str(not_a_wheel), check=False)
    assert refused.returncode == 1
    assert "is not a Headwater wheel file" in refused.stderr
    assert "pip wheel --no-deps" in refused.stderr
    assert not (root / "requirements.lock").exists()
    assert not (root / "wheels").exists()
