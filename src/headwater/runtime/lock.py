"""``headwater deploy lock``: the image's ``requirements.lock``, every file pinned by its hash.

pip resolves ``requirements.in`` for the image rather than for the machine it runs on
(CPython :data:`IMAGE_PYTHON` on Linux x86_64, wheels only) and reports what it would
install (``pip install --dry-run --report``); each package becomes one
``name==version --hash=sha256:...`` line. This needs nothing but pip, and the resolver
that writes the lock is the installer that reads it in the Dockerfile.

Headwater itself may come from a wheel file rather than a package index: it is kept in
``wheels/`` beside ``headwater.toml``, and the lock names that folder
(``--find-links ./wheels``, relative to the lock), so the image and CI install the very
file that was locked; its hash is checked like any other.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater import __version__
from headwater.core.errors import ConfigError

#: The Dockerfile's base image is ``python:{IMAGE_PYTHON}-slim`` (Debian, x86_64).
IMAGE_PYTHON = "3.11"
#: Wheels built for this glibc or an older one run on the image's Debian (12 has 2.36;
#: later releases have more).
IMAGE_GLIBC_MINOR = 36
REQUIREMENTS_IN = "requirements.in"
REQUIREMENTS_LOCK = "requirements.lock"
WHEELS = "wheels"


def requirement(extras: list[str]) -> str:
    """The line of ``requirements.in`` that asks for this version of Headwater.

    >>> requirement(["gcs", "bigquery"]) == f"headwater[bigquery,gcs]=={__version__}"
    True
    """
    wanted = ",".join(sorted(set(extras)))
    return f"headwater[{wanted}]=={__version__}" if wanted else f"headwater=={__version__}"


def platform_options() -> list[str]:
    """pip's options that resolve for the image instead of this machine.

    pip takes each manylinux tag literally, so every glibc up to the image's is named.

    >>> options = platform_options()
    >>> options[:4], "manylinux_2_17_x86_64" in options, "manylinux2014_x86_64" in options
    (['--only-binary=:all:', '--python-version', '3.11', '--implementation'], True, True)
    """
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(IMAGE_GLIBC_MINOR, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    abi = "cp" + IMAGE_PYTHON.replace(".", "")
    options = ["--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp"]
    options += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in tags:
        options += ["--platform", tag]
    return options


def lock_text(report: dict[str, Any], *, find_links: bool) -> str:
    """``requirements.lock`` from pip's installation report (``pip install --report``).

    >>> report = {"install": [{"metadata": {"name": "PyYAML", "version": "6.0.2"},
    ...     "download_info": {"archive_info": {"hashes": {"sha256": "ab12"}}}}]}
    >>> print(lock_text(report, find_links=False).splitlines()[-2:])
    ['pyyaml==6.0.2 \\\\', '    --hash=sha256:ab12']
    """
    lines = [
        f"# Written by `headwater deploy lock` from {REQUIREMENTS_IN}: written again each time.",
        f"# For the image: CPython {IMAGE_PYTHON} on Linux x86_64 (manylinux wheels).",
        "# Install with: pip install --require-hashes -r requirements.lock",
    ]
    if find_links:
        lines.append(f"--find-links ./{WHEELS}")
    pins = []
    for item in report.get("install", []):
        name = str(item["metadata"]["name"]).lower().replace("_", "-")
        version = item["metadata"]["version"]
        digest = item.get("download_info", {}).get("archive_info", {}).get("hashes", {})
        if "sha256" not in digest:
            raise ConfigError(
                f"pip reported no sha256 for {name} {version}, so it cannot be pinned by hash",
                hint="install it from a package index or a wheel file, not a folder or VCS URL",
            )
        pins.append(f"{name}=={version} \\\n    --hash=sha256:{digest['sha256']}")
    return "\n".join(lines + sorted(pins)) + "\n"


@dataclass(frozen=True)
class Locked:
    """What ``lock`` wrote."""

    requirements_in: Path
    wrote_in: bool
    lock: Path
    packages: int
    wheel: Path | None


def lock(root: Path, *, extras: list[str] | None = None, wheel: Path | None = None) -> Locked:
    """Write ``requirements.in`` (when missing) and ``requirements.lock`` in ``root``.

    ``wheel``: a Headwater wheel file, copied into ``root/wheels/`` (replacing other
    Headwater wheels there) for projects whose package index does not have Headwater.
    """
    if importlib.util.find_spec("pip") is None:
        raise ConfigError(
            f"pip is missing from the environment Headwater runs in ({sys.executable})",
            hint=f"install it there: {sys.executable} -m ensurepip",
        )
    source = root / REQUIREMENTS_IN
    wrote_in = _requirements_in(source, extras)
    folder = root / WHEELS
    kept = _keep_wheel(wheel, folder) if wheel is not None else None
    find_links = folder.is_dir() and any(folder.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="headwater-lock-") as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--report", str(report_path), *platform_options(),
            *(["--find-links", str(folder)] if find_links else []), "-r", str(source),
        ]  # fmt: skip
        # The command is this interpreter's pip and paths of the project, not user input.
        result = subprocess.run(command, capture_output=True, text=True, cwd=root, check=False)  # noqa: S603
        if result.returncode != 0:
            raise _failure(result.stderr or result.stdout, find_links=find_links)
        report = json.loads(report_path.read_text(encoding="utf-8"))
    text = lock_text(report, find_links=find_links)
    target = root / REQUIREMENTS_LOCK
    target.write_text(text, encoding="utf-8")
    return Locked(source, wrote_in, target, len(report.get("install", [])), kept)


def _requirements_in(path: Path, extras: list[str] | None) -> bool:
    if not path.exists():
        path.write_text(
            "# What the image needs; `headwater deploy lock` pins it into requirements.lock.\n"
            "# Add the packages your Python pipelines import below.\n"
            f"{requirement(extras or [])}\n",
            encoding="utf-8",
        )
        return True
    if extras is not None:
        wanted = requirement(extras)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        if wanted not in lines:
            raise ConfigError(
                f"{REQUIREMENTS_IN} exists and does not ask for {wanted}",
                path=str(path),
                hint=f"edit its headwater line to {wanted} (or delete the file to write it "
                "again), then run headwater deploy lock without --extras",
            )
    return False


def _keep_wheel(wheel: Path, folder: Path) -> Path:
    if not (wheel.is_file() and wheel.name.startswith("headwater-") and wheel.suffix == ".whl"):
        raise ConfigError(
            f"{wheel} is not a Headwater wheel file",
            hint="build one from Headwater's source: pip wheel --no-deps -w dist PATH_TO_HEADWATER",
        )
    folder.mkdir(exist_ok=True)
    for old in folder.glob("headwater-*.whl"):
        if old.name != wheel.name:
            old.unlink()
    target = folder / wheel.name
    if wheel.resolve() != target.resolve():
        shutil.copyfile(wheel, target)
    return target


def _failure(output: str, *, find_links: bool) -> ConfigError:
    errors = [line for line in output.splitlines() if line.startswith("ERROR")] or [
        line for line in output.splitlines() if line.strip()
    ][-3:]
    said = " ".join(errors)
    if "requirement headwater" in said and not find_links:
        hint = (
            "Headwater is not on your package index: build a wheel (pip wheel --no-deps -w dist "
            "PATH_TO_HEADWATER) and pass it with --wheel dist/headwater-VERSION-py3-none-any.whl"
        )
    else:
        hint = (
            f"every package must have a wheel for CPython {IMAGE_PYTHON} on Linux x86_64 "
            f"(manylinux, glibc 2.{IMAGE_GLIBC_MINOR} or older): change the version in "
            f"{REQUIREMENTS_IN} to one that does"
        )
    return ConfigError(f"pip could not resolve {REQUIREMENTS_IN}: {said}", hint=hint)
