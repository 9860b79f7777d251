"""What every browser test shares: Debian's headless Chromium, one demo server for the
session, and a logged-in page that records uncaught errors and CSP violations.

The demo's data folder is provisioned before it starts with the admin ``tester``
(:func:`shopfloor.testing.auth.provision`): ``open_page`` logs each new page in as it
(through the API, so the session cookie is the page's own); ``demo_user`` has its password
and an API token (``demo_user.headers``) for the requests a test makes itself.

Test modules get the helpers through the ``wait_for`` and ``open_page`` fixtures (test
modules are imported by path, so they do not import each other or this file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from shopfloor.testing.auth import Provisioned, log_in_page, provision
from shopfloor.testing.processes import free_port

WaitFor = Callable[[Page, str, object, str], Awaitable[None]]
OpenPage = Callable[..., Awaitable[tuple[Page, list[str]]]]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STARTUP_S = 40.0
WAIT_MS = 20_000


def demo_command(port: int, data_dir: Path) -> list[str]:
    """The command line of the demo under test."""
    return [
        sys.executable,
        "-m",
        "shopfloor",
        "demo",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--speed",
        "5",
        "--no-status",
    ]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; missing, it fails the test under CI and skips it elsewhere."""
    if not CHROMIUM.exists():
        message = "headless Chromium is missing: install Debian's 'chromium' package"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's data folder."""
    return tmp_path_factory.mktemp("demo-data")


@pytest.fixture(scope="session")
def demo_user(demo_data: Path) -> Provisioned:
    """The admin ``tester`` in the demo's data folder: password and API token."""
    return provision(demo_data, role="admin", user="tester")


@pytest.fixture(scope="session")
def demo_url(
    chromium: Path,
    tmp_path_factory: pytest.TempPathFactory,
    demo_data: Path,
    demo_user: Provisioned,
) -> Iterator[str]:
    """Run the demo as a subprocess; yield its base URL once /healthz answers; stop it.

    One demo serves every browser test. The pages only read from it, but for journal
    comments: an action that would change an alarm is answered by a route the test fakes.
    """
    port = free_port()
    tmp_path = tmp_path_factory.mktemp("demo")
    data_dir = demo_data
    log = tmp_path / "demo.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            demo_command(port, data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"the demo exited with code {process.returncode} before serving:\n" + _tail(log)
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the demo did not answer /healthz within {STARTUP_S:.0f} s:\n" + _tail(log)
                )
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(autouse=True)
def _forget_tester_language(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the shared demo, ``tester`` has no saved language again: the
    language menu saves its choice with the account (PATCH /api/v1/auth/me), and the next
    test must not inherit it (it would outrank the browser's language and the cookie)."""
    yield
    if "demo_url" not in request.fixturenames:
        return
    base, user = request.getfixturevalue("demo_url"), request.getfixturevalue("demo_user")
    answer = httpx.patch(
        f"{base}/api/v1/auth/me", json={"locale": None}, headers=user.headers, timeout=10
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def wait_until(page: Page, js: str, arg: object, what: str) -> None:
    """Wait for ``js`` to be truthy; fail naming ``what`` when it is not within WAIT_MS."""
    try:
        await page.wait_for_function(js, arg=arg, timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        await page.screenshot(path=str(ARTIFACTS / "live-page-failure.png"))
        pytest.fail(f"{what} within {WAIT_MS / 1000:.0f} s (see test-artifacts/)")


async def new_page(browser: Browser, *, width: int, height: int) -> tuple[Page, list[str]]:
    """A page that records uncaught errors and CSP violations into the returned list."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Once the server sends a Content-Security-Policy, its violations show up here too.
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.text.startswith("CSP violation") else None,
    )
    await page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "`CSP violation: ${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`))"
    )
    return page, errors


@pytest.fixture
def wait_for() -> WaitFor:
    """``await wait_for(page, js, arg, what)``: fail naming ``what`` unless ``js`` turns truthy."""
    return wait_until


@pytest.fixture
def open_page(demo_url: str, demo_user: Provisioned) -> OpenPage:
    """``page, errors = await open_page(browser, width=..., height=...)``: a page logged in
    to the demo as ``tester`` (``logged_in=False`` for one that is not)."""

    async def open_logged_in(
        browser: Browser, *, width: int, height: int, logged_in: bool = True
    ) -> tuple[Page, list[str]]:
        page, errors = await new_page(browser, width=width, height=height)
        if logged_in:
            await log_in_page(page, demo_url, demo_user)
        return page, errors

    return open_logged_in
