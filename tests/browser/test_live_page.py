"""The live page in a real headless Chromium against the real demo, as an operator sees it.

Starts ``python -m shopfloor demo`` on a free port, opens ``/``, waits for machine cards,
watches a displayed value change through the websocket, opens a temperature trend and waits
for it to extend live. Screenshots go to ``test-artifacts/`` for people to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

pytestmark = pytest.mark.browser

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

# The newest point of the trend's main line, read from ECharts itself, as [count, last ts].
TREND_TAIL_JS = """() => {
  const el = document.getElementById("trend-chart");
  const chart = window.echarts && window.echarts.getInstanceByDom(el);
  if (!chart) return null;
  const series = chart.getOption().series || [];
  const line = series.find((s) => s.id === "value" || s.id === "avg");
  if (!line || !line.data || !line.data.length) return [0, null];
  return [line.data.length, line.data[line.data.length - 1][0]];
}"""

# Every displayed value keyed by its tag path.
VALUES_JS = """() => Object.fromEntries(
  [...document.querySelectorAll(".card .tag-row")].map(
    (row) => [row.dataset.tagPath, row.querySelector(".tag-value").textContent])
)"""


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


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; missing, it fails the test under CI and skips it elsewhere."""
    if not CHROMIUM.exists():
        message = "headless Chromium is missing: install Debian's 'chromium' package"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@pytest.fixture
def demo_url(chromium: Path, tmp_path: Path) -> Iterator[str]:
    """Run the demo as a subprocess; yield its base URL once /healthz answers; stop it."""
    port = _free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
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


async def _wait(page: Page, js: str, arg: object, what: str) -> None:
    """Wait for ``js`` to be truthy; fail naming ``what`` when it is not within WAIT_MS."""
    try:
        await page.wait_for_function(js, arg=arg, timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        await page.screenshot(path=str(ARTIFACTS / "live-page-failure.png"))
        pytest.fail(f"{what} within {WAIT_MS / 1000:.0f} s (see test-artifacts/)")


async def test_live_page_shows_moving_values_and_a_live_trend(
    demo_url: str, browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": 1920, "height": 1080})
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
    await page.goto(demo_url + "/")

    await _wait(page, "() => document.querySelector('.card .tag-row')", None, "no machine card")
    await _wait(
        page,
        "() => document.getElementById('conn').dataset.state === 'live'",
        None,
        "the live connection did not come up",
    )
    await _wait(
        page,
        "() => [...document.querySelectorAll('.card .tag-value')]"
        ".some((v) => /\\d/.test(v.textContent))",
        None,
        "no card shows a number",
    )
    first: dict[str, str] = await page.evaluate(VALUES_JS)
    await _wait(
        page,
        f"(first) => Object.entries(({VALUES_JS})())"
        ".some(([p, v]) => p in first && first[p] !== v)",
        first,
        "no displayed value changed",
    )
    # A changed value is highlighted briefly (a CSS animation restarted on each change).
    await _wait(
        page, "() => document.querySelector('.card .tag-value.flash')", None, "no highlight"
    )
    await page.screenshot(path=str(ARTIFACTS / "live-page-1920x1080.png"))

    # A temperature tag: by name, or by unit when the name does not say it.
    temperature = await page.evaluate(
        """() => {
          const rows = [...document.querySelectorAll(".card button.tag-row")];
          const row = rows.find((r) => /temp/i.test(r.dataset.path))
            || rows.find((r) => /^(degC|degF|°C|K)$/.test(r.dataset.unit));
          return row ? row.dataset.path : null;
        }"""
    )
    assert temperature, f"no temperature tag among the cards: {sorted(first)}"
    async with page.expect_response(lambda r: "/series" in r.url, timeout=WAIT_MS) as raw:
        await page.locator(f'.card button.tag-row[data-path="{temperature}"]').click()
    history = await (await raw.value).json()
    assert history["bucket"] is None
    assert history["columns"]["ts"], f"the page asked for an empty window: {(await raw.value).url}"
    await page.wait_for_selector("#trend-chart canvas", state="visible", timeout=WAIT_MS)
    await _wait(
        page,
        f"() => {{ const t = ({TREND_TAIL_JS})(); return t && t[0] > 0; }}",
        None,
        f"the trend of {temperature} drew no points",
    )
    count, last_ts = await page.evaluate(TREND_TAIL_JS)
    await _wait(
        page,
        f"(last) => {{ const t = ({TREND_TAIL_JS})(); return t && t[1] > last; }}",
        last_ts,
        f"the trend of {temperature} did not extend live past {count} points",
    )
    await page.screenshot(path=str(ARTIFACTS / "live-page-trend-1920x1080.png"))

    # A longer range asks the historian for buckets: the chart redraws with averages.
    async with page.expect_response(lambda r: "/series" in r.url, timeout=WAIT_MS) as bucketed:
        await page.locator('#range [data-range="1h"]').click()
    longer = await (await bucketed.value).json()
    assert longer["bucket"], "a 1 h trend asks for buckets"
    assert longer["columns"]["avg"], f"no buckets in {(await bucketed.value).url}"
    assert await page.get_attribute('#range [data-range="1h"]', "aria-pressed") == "true"
    await _wait(
        page,
        """() => {
          const chart = window.echarts.getInstanceByDom(document.getElementById("trend-chart"));
          const avg = (chart.getOption().series || []).find((s) => s.id === "avg");
          return avg && avg.data.length > 0;
        }""",
        None,
        f"the 1 h trend of {temperature} drew no bucket averages",
    )

    await page.set_viewport_size({"width": 1024, "height": 768})
    await page.wait_for_timeout(500)
    await page.screenshot(path=str(ARTIFACTS / "live-page-trend-1024x768.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"
