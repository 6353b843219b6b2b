"""The dashboard in a real browser: a ``headwater up`` with an admin, Debian's Chromium
driven by Playwright, and the checks every page gets (axe-core, same origin, screenshot).

Fixtures for every dashboard test module:

- ``dash``: a running server (module-wide) with an admin; ``dash.token`` signs in,
  ``dash.signed_in()`` gives an HTTP client and its CSRF token, ``dash.admin_actions()``
  what the metadata logged.
- ``browser``: Chromium, launched by path, once per module.
- ``page``: a signed-in page whose requests are recorded; at the end of the test every
  request must have stayed on the server's origin.
- ``check_page(page, name, heading)``: the page's screenshot saved as an artifact and
  checked, its layout (navigation, one main heading) and axe-core's serious findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pytest

from headwater.cli.scaffold import add_admin, add_consumer
from headwater.state.admin_actions import AdminAction
from headwater.state.database import StateStore
from tests.conftest import Project, Server
from tests.test_sdk_clients import CHROMIUM, CHROMIUM_ARGS, node_modules

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

__all__ = ["node_modules"]

#: Screenshots of every page, kept after the run (ignored by git).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
#: A laptop and a phone.
VIEWPORTS = {"laptop": {"width": 1366, "height": 800}, "phone": {"width": 390, "height": 844}}


@dataclass
class Dash:
    """A running server with an admin."""

    server: Server
    project: Project
    token: str
    admin: str = "alice"

    @property
    def url(self) -> str:
        return self.server.url

    def signed_in(self) -> tuple[httpx.Client, str]:
        """An HTTP client signed in as the admin, and the CSRF token its forms carry (for
        actions posted without a browser). Close the client."""
        client = httpx.Client(base_url=self.url, timeout=30)
        answer = client.post("/signin", data={"token": self.token, "next": "/live"})
        assert answer.status_code == 303, answer.text
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', client.get("/live").text)
        assert found is not None, "no CSRF token in the page"
        return client, found.group(1)

    def admin_actions(self) -> list[AdminAction]:
        """What admins did, newest first, as the metadata keeps it."""
        state = StateStore.in_folder(self.project.data_dir, migrate=False)
        try:
            return state.admin_actions.recent()
        finally:
            state.close()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    from headwater.cli.scaffold import init_project

    root = tmp_path_factory.mktemp("dash") / "project"
    key = init_project(root)
    project = Project(root=root, key=key)
    token = add_admin(root / "headwater.toml", "alice")
    add_consumer(root / "headwater.toml", "recommender", ["daily_active_users", "events"])
    server = Server(project).start()
    yield Dash(server, project, token)
    server.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is needed for the dashboard tests; install Debian's chromium")
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
    )
    yield launched
    launched.close()


@dataclass
class Watched:
    """What a page asked for, and what went wrong in it."""

    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def watch(page: Page) -> Watched:
    seen = Watched()
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("pageerror", lambda error: seen.problems.append(f"page error: {error}"))
    page.on(
        "response",
        lambda response: (
            seen.problems.append(f"{response.status} for {response.url}")
            if response.status >= 400
            else None
        ),
    )
    page.on(
        "console",
        lambda message: (
            seen.problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    return seen


def sign_in(page: Page, dash: Dash) -> None:
    page.goto(dash.url + "/signin")
    page.get_by_label("Admin token").fill(dash.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(dash.url + "/")


@pytest.fixture
def page(browser: Browser, dash: Dash, node_modules: Path) -> Iterator[Page]:
    """A signed-in laptop-sized page; its requests must all stay on the server's origin, and
    it must log no error (a script or style the page's CSP refuses shows up as one).

    axe-core is added to every document as an init script: the page's CSP (rightly) refuses
    a script tag the test would insert, and the browser's own injection is not subject to it.
    """
    context = browser.new_context(viewport=VIEWPORTS["laptop"])  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    context.add_init_script(path=node_modules / "axe-core" / "axe.min.js")
    opened = context.new_page()
    seen = watch(opened)
    sign_in(opened, dash)
    yield opened
    context.close()
    outside = [url for url in seen.requests if not url.startswith(dash.url + "/")]
    assert outside == [], f"requests left the page's origin: {outside}"
    assert seen.problems == [], seen.problems


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now."""
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return found


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class CheckPage(Protocol):
    def __call__(self, page: Page, name: str, heading: str, *, signed_in: bool = True) -> None: ...


@pytest.fixture
def check_page(artifacts: Path) -> CheckPage:
    """Screenshots (laptop and phone) saved and non-empty, the layout's landmarks there, and
    no serious accessibility finding."""

    def check(page: Page, name: str, heading: str, *, signed_in: bool = True) -> None:
        from playwright.sync_api import expect

        navigation = page.get_by_role("navigation", name="Pages")
        if signed_in:
            expect(navigation).to_be_visible()
        else:
            expect(navigation).to_have_count(0)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        assert page.locator("main h1").count() == 1
        for size, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)  # type: ignore[arg-type]
            # Two frames: what resizes itself (the charts, by a ResizeObserver) has done so.
            page.evaluate(
                "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
            )
            # Nothing wider than the screen: the page scrolls down, not sideways.
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} is {overflow}px wider than a {size} screen"
            shot = artifacts / f"{name}-{size}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000, f"{shot} is (nearly) empty"
            with shot.open("rb") as image:
                assert image.read(8) == b"\x89PNG\r\n\x1a\n"
        page.set_viewport_size(VIEWPORTS["laptop"])  # type: ignore[arg-type]
        violations = axe_violations(page)
        assert violations == [], f"{name}: accessibility problems: {violations}"

    return check
