"""The official JavaScript SDKs, unmodified, pointed at Headwater by host alone.

Node.js runs ``@segment/analytics-node`` and ``@rudderstack/rudder-sdk-node``; headless
Chromium (driven by Playwright) runs Segment's browser library ``@segment/analytics-next``
from the npm package's own build, with its settings given inline so it never asks
cdn.segment.com. Every request goes through a recording proxy on loopback, so a failure
shows what the SDK sent and what the collector answered.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import pytest

from tests.conftest import Project, Server

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage

SDKS = Path(__file__).parent / "sdks"
PACKAGES = (
    "@segment/analytics-node",
    "@rudderstack/rudder-sdk-node",
    "@segment/analytics-next",
    # Not an SDK: the accessibility checker the dashboard tests run in the browser.
    "axe-core",
)
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's services; the
# resolver rule makes any name but loopback fail before a packet leaves.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
EVERY_TYPE = ["alias", "group", "identify", "page", "screen", "track"]
# Headers that belong to one hop; the proxy sets its own.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


@dataclass(frozen=True)
class Exchange:
    """One request as it arrived from the SDK, and the collector's answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer_headers: dict[str, str]
    answer: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def payload(self) -> Any:
        """The body as JSON, after gzip when the request says so; ``None`` if it is not."""
        raw = self.body
        try:
            if self.header("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            return json.loads(raw)
        except (OSError, EOFError, ValueError):
            return None

    def events(self) -> int:
        payload = self.payload()
        if not isinstance(payload, dict):
            return 0
        batch = payload.get("batch")
        return len(batch) if isinstance(batch, list) else 1

    def describe(self, key: str) -> str:
        if self.method == "OPTIONS":
            asked = self.header("access-control-request-headers") or "-"
            allowed = self.answer_headers.get("access-control-allow-headers", "-")
            origin = self.answer_headers.get("access-control-allow-origin", "-")
            return (
                f"OPTIONS {self.path} asks for headers {asked} -> {self.status} "
                f"allow-origin={origin} allow-headers={allowed}"
            )
        payload = self.payload()
        auth = self.header("authorization")
        keyed = auth == "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        fields = sorted(payload) if isinstance(payload, dict) else "not JSON"
        return (
            f"{self.method} {self.path} content-type={self.header('content-type') or '-'} "
            f"content-encoding={self.header('content-encoding') or '-'} "
            f"authorization={'basic(write key)' if keyed else auth or '-'} "
            f"body fields={fields} events={self.events()} -> {self.status} "
            f"{self.answer[:300].decode(errors='replace')}"
        )


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    """Passes each request to the collector byte for byte, and keeps a copy of both sides."""

    server: _RecordingServer

    def _forward(self) -> None:
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            answer_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            status = response.status
        finally:
            upstream.close()
        with self.server.lock:
            self.server.exchanges.append(
                Exchange(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    status=status,
                    answer_headers={k.lower(): v for k, v in answer_headers},
                    answer=answer,
                )
            )
        self.send_response(status)
        for name, value in answer_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_POST = do_OPTIONS = do_GET = do_PUT = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorder:
    """A reverse proxy on loopback in front of the collector, recording every exchange."""

    def __init__(self, upstream: str) -> None:
        self._server = _RecordingServer(upstream)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"

    @property
    def exchanges(self) -> list[Exchange]:
        with self._server.lock:
            return list(self._server.exchanges)

    def events_answered(self) -> int:
        return sum(e.events() for e in self.exchanges if e.method == "POST")

    def describe(self, key: str) -> str:
        return "\n".join(e.describe(key) for e in self.exchanges) or "(no requests)"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Files(BaseHTTPRequestHandler):
    """Serves the test page, and analytics.js's bundles as its npm package ships them."""

    ROUTES: ClassVar[dict[str, Path]] = {
        "/": SDKS / "browser.html",
        "/browser.js": SDKS / "browser.js",
    }
    BUNDLES = "/analytics-next/bundles/"
    TYPES: ClassVar[dict[str, str]] = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
    }

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        file = self.ROUTES.get(path)
        if file is None and path.startswith(self.BUNDLES):
            umd = SDKS / "node_modules/@segment/analytics-next/dist/umd"
            name = path.removeprefix(self.BUNDLES)
            file = umd / name if "/" not in name and (umd / name).is_file() else None
        if file is None:
            self.send_error(404)
            return
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.TYPES.get(file.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _outdated() -> list[str]:
    """The SDKs that are not installed at the version package-lock.json names."""
    locked = json.loads((SDKS / "package-lock.json").read_text())["packages"]
    outdated = []
    for name in PACKAGES:
        manifest = SDKS / "node_modules" / name / "package.json"
        version = json.loads(manifest.read_text())["version"] if manifest.exists() else None
        if version != locked[f"node_modules/{name}"]["version"]:
            outdated.append(name)
    return outdated


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The SDKs at package-lock.json's versions, installed by ``npm ci`` when they are not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js 20 or later and npm are needed for the SDK tests; install them")
    if _outdated():
        # No install scripts: the one dependency that has any (msgpackr-extract, under
        # RudderStack's optional Redis queue) falls back to plain JavaScript.
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=SDKS,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        assert _outdated() == [], "npm ci did not install the versions in package-lock.json"
    return SDKS / "node_modules"


@pytest.fixture
def recorder(shared_server: Server) -> Iterator[Recorder]:
    running = Recorder(shared_server.url)
    yield running
    running.close()


@pytest.fixture
def site(node_modules: Path) -> Iterator[str]:
    """The test page's origin, a different one from the collector's, as on a real site."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _run_node(script: str, config: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, script, json.dumps(config)],
        cwd=SDKS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _assert_every_call_landed(
    project: Project, recorder: Recorder, tag: str, library: str, before: datetime
) -> list[dict[str, Any]]:
    """Each of the six calls is one row with its type's columns; returns the rows."""
    sent = recorder.describe(project.key)
    refused = [e for e in recorder.exchanges if not 200 <= e.status < 300]
    assert refused == [], f"the collector refused requests:\n{sent}"

    rows = project.query("SELECT * FROM events WHERE user_id = ?", f"{tag}-u").to_pylist()
    assert sorted(row["type"] for row in rows) == EVERY_TYPE, f"requests:\n{sent}"
    assert len({row["message_id"] for row in rows}) == len(EVERY_TYPE)
    by_type = {row["type"]: row for row in rows}

    track = by_type["track"]
    assert track["event"] == "Order Completed"
    assert json.loads(track["properties"]) == {"total": 42.5, "items": [1, 2]}
    traits = json.loads(by_type["identify"]["traits"])
    assert traits["email"] == "ada@example.com"
    assert traits["plan"] == "pro"
    assert by_type["page"]["name"] == "Pricing"
    assert json.loads(by_type["page"]["properties"])["path"] == "/pricing"
    assert by_type["screen"]["name"] == "Welcome"
    assert json.loads(by_type["screen"]["properties"])["step"] == 1
    assert by_type["group"]["group_id"] == f"{tag}-g"
    assert json.loads(by_type["group"]["traits"])["name"] == "Acme"
    assert by_type["alias"]["previous_id"] == f"{tag}-old"

    for row in rows:
        assert row["source"] == "web"
        assert len(row["message_id"]) >= 16
        assert json.loads(row["context"])["library"]["name"] == library
        # Clock skew is corrected against the server's clock: close to now.
        assert before - timedelta(seconds=5) <= row["timestamp"] <= datetime.now(UTC)
        assert before - timedelta(seconds=5) <= row["received_at"] <= datetime.now(UTC)
        assert row["original_timestamp"] is not None
        assert row["sent_at"] is not None
    return rows


@pytest.mark.parametrize("flush_at", [15, 1], ids=["batch", "single"])
def test_segment_analytics_node(
    node_modules: Path, shared_project: Project, recorder: Recorder, flush_at: int
) -> None:
    tag = f"segment-node-{flush_at}"
    before = datetime.now(UTC)
    report = _run_node(
        "segment-node.js",
        {"host": recorder.url, "writeKey": shared_project.key, "tag": tag, "flushAt": flush_at},
    )
    assert report["errors"] == [], recorder.describe(shared_project.key)
    _assert_every_call_landed(shared_project, recorder, tag, "@segment/analytics-node", before)


@pytest.mark.parametrize("gzip_body", [True, False], ids=["gzip", "plain"])
def test_rudder_sdk_node(
    node_modules: Path, shared_project: Project, recorder: Recorder, gzip_body: bool
) -> None:
    tag = f"rudder-node-{'gz' if gzip_body else 'plain'}"
    before = datetime.now(UTC)
    report = _run_node(
        "rudder-node.js",
        {"host": recorder.url, "writeKey": shared_project.key, "tag": tag, "gzip": gzip_body},
    )
    assert report["errors"] == [], recorder.describe(shared_project.key)
    # The RudderStack SDK names itself after the Segment library it was forked from.
    _assert_every_call_landed(shared_project, recorder, tag, "analytics-node", before)


def _chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is needed for the browser SDK test; install Debian's chromium")
    return CHROMIUM


@pytest.mark.parametrize("batching", [False, True], ids=["standard", "batching"])
def test_analytics_js_in_chromium(
    shared_project: Project, recorder: Recorder, site: str, tmp_path: Path, batching: bool
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is needed for the browser SDK test")
    chromium = _chromium()
    tag = f"ajs-{'batching' if batching else 'standard'}"
    requested: list[str] = []
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    before = datetime.now(UTC)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=30_000,
        )
        try:
            context.set_default_timeout(20_000)
            # Not context.route(): with interception on, Playwright answers CORS preflights
            # itself, and the collector's answer to them is part of what is tested here.
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", console)
            page.goto(site + "/")
            # evaluate() has no timeout of its own: the race bounds it.
            report = page.evaluate(
                """config => Promise.race([
                    window.sendEveryType(config),
                    new Promise((_, reject) => setTimeout(
                        () => reject(new Error('analytics.js did not finish in 30 s')), 30000)),
                ])""",
                {
                    "writeKey": shared_project.key,
                    "apiHost": f"{recorder.host}/v1",
                    "tag": tag,
                    "batching": batching,
                },
            )
            # With batching, the calls resolve before their batch is sent.
            deadline = time.monotonic() + 15
            while recorder.events_answered() < len(EVERY_TYPE) and time.monotonic() < deadline:
                page.wait_for_timeout(50)
        finally:
            context.close()

    sent = recorder.describe(shared_project.key)
    outside = [
        url
        for url in requested
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert outside == [], f"requests left loopback: {outside}"
    failed = [d for d in report["delivered"] if d["failed"]]
    assert failed == [], f"{failed}\n{report['errors']}\nrequests:\n{sent}\n{problems}"
    assert report["errors"] == [], sent
    rows = _assert_every_call_landed(shared_project, recorder, tag, "analytics.js", before)
    assert {row["anonymous_id"] for row in rows} == {f"{tag}-anon"}
    assert problems == [], sent
