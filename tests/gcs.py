"""A throwaway Cloud Storage emulator for tests: ``gcp-storage-emulator`` (from PyPI) in a
child process, in memory, on a free loopback port.

Clients find it through ``STORAGE_EMULATOR_HOST``, which gcsfs honours (pyarrow's own
GCS filesystem does not). ``use_emulator`` points this process and the ``headwater``
child processes it starts at the emulator:

- ``STORAGE_EMULATOR_HOST``: gcsfs sends its HTTP requests there;
- ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs's default filesystem first asks
  the Storage Control API, over gRPC, what kind of bucket it has; the emulator
  speaks no gRPC, and every such question takes a minute to give up;
- the metadata server's address on loopback, so that nothing that looks for
  Google's default credentials leaves the machine (the tests pass ``token = "anon"``).

The emulator lacks one call that gcsfs makes: Objects: move (``.../o/NAME/moveTo/o/NEW``),
which gcsfs tries first for every rename and, on the emulator's 501, retries for half a
minute before it falls back to a copy and a delete. ``_LAUNCH`` starts the emulator with
that call added, done as the copy and delete gcsfs would fall back to.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import fsspec
import httpx
import pytest


@dataclass(frozen=True)
class GcsEmulator:
    url: str  # http://127.0.0.1:PORT

    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to use the emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            "NO_GCE_CHECK": "true",
        }

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (through the emulator's JSON API): its name."""
        name = name or f"hw-{uuid.uuid4().hex[:12]}"
        response = httpx.post(f"{self.url}/storage/v1/b", json={"name": name}, timeout=10)
        assert response.status_code == 200, response.text
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket``, by name, with its size (listed by the JSON API)."""
        found: dict[str, int] = {}
        token = None
        while True:
            params = {"pageToken": token} if token else {}
            response = httpx.get(f"{self.url}/storage/v1/b/{bucket}/o", params=params, timeout=10)
            assert response.status_code == 200, response.text
            body = response.json()
            found.update({item["name"]: int(item["size"]) for item in body.get("items", [])})
            token = body.get("nextPageToken")
            if not token:
                return found

    def read(self, bucket: str, name: str) -> bytes:
        """An object's bytes, downloaded with the JSON API's media link."""
        response = httpx.get(
            f"{self.url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
            params={"alt": "media"},
            timeout=30,
        )
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text}"
        return response.content


#: The emulator's command line, with Objects: move (same bucket) added as copy then delete.
_LAUNCH = """
import sys
from gcp_storage_emulator import __main__ as cli, server
from gcp_storage_emulator.handlers import objects

def move(request, response, storage, *args, **kwargs):
    request.params["dest_bucket_name"] = request.params["bucket_name"]
    objects.copy(request, response, storage)
    if response.status == 200:
        objects._delete(storage, request.params["bucket_name"], request.params["object_id"])

server.HANDLERS = (
    (
        r"^/storage/v1/b/(?P<bucket_name>[-.\\w]+)/o/(?P<object_id>.*[^/]+)"
        r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$",
        {server.POST: move},
    ),
    *server.HANDLERS,
)
cli.main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gcs_emulator(timeout: float = 30.0) -> Iterator[GcsEmulator]:
    """Start the emulator (objects in memory), wait until it answers, stop it after."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCH,
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--in-memory",
                "--quiet",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
        )
        emulator = GcsEmulator(f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"the emulator exited early:\n{log.read().decode()}")
                try:
                    if httpx.get(f"{emulator.url}/", timeout=1).text == "OK":
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not answer in {timeout}s")
                time.sleep(0.05)
            yield emulator
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsEmulator]:
    """One emulator for the session, started on first use."""
    with gcs_emulator() as emulator:
        yield emulator


def point_at(emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point gcsfs, here and in child processes, at ``emulator``, with no credentials
    (fsspec's configuration gives this process's ``gs://`` filesystems ``token="anon"``)."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    import gcsfs.core

    # gcsfs picks its default class when first imported; should that have happened
    # before the variable above was set, use the plain one all the same.
    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)


@pytest.fixture
def use_emulator(gcs: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """The session's emulator, which this test and its child processes use (``point_at``)."""
    point_at(gcs, monkeypatch)
    return gcs
