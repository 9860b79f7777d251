"""The live page in a real headless Chromium against the real demo, as an operator sees it.

Starts ``python -m shopfloor demo`` on a free port, opens ``/``, waits for machine cards,
watches a displayed value change through the websocket, opens a temperature trend and waits
for it to extend live. Screenshots go to ``test-artifacts/`` for people to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.async_api import Browser, Route

from shopfloor.testing.auth import Provisioned

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
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


async def test_live_page_shows_moving_values_and_a_live_trend(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1920, height=1080)
    await page.goto(demo_url + "/")

    await wait_for(page, "() => document.querySelector('.card .tag-row')", None, "no machine card")
    await wait_for(
        page,
        "() => document.getElementById('conn').dataset.state === 'live'",
        None,
        "the live connection did not come up",
    )
    await wait_for(
        page,
        "() => [...document.querySelectorAll('.card .tag-value')]"
        ".some((v) => /\\d/.test(v.textContent))",
        None,
        "no card shows a number",
    )
    first: dict[str, str] = await page.evaluate(VALUES_JS)
    await wait_for(
        page,
        f"(first) => Object.entries(({VALUES_JS})())"
        ".some(([p, v]) => p in first && first[p] !== v)",
        first,
        "no displayed value changed",
    )
    # A changed value is highlighted briefly (a CSS animation restarted on each change).
    await wait_for(
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
    await wait_for(
        page,
        f"() => {{ const t = ({TREND_TAIL_JS})(); return t && t[0] > 0; }}",
        None,
        f"the trend of {temperature} drew no points",
    )
    count, last_ts = await page.evaluate(TREND_TAIL_JS)
    await wait_for(
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
    await wait_for(
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


# The page's palette (app.css): what green, amber and red mean to an operator.
GREEN = "rgb(47, 191, 113)"
AMBER = "rgb(240, 160, 32)"
RED = "rgb(229, 72, 77)"

INDICATOR_JS = """() => {
  const button = document.getElementById("connectors-btn");
  const count = document.getElementById("connectors-count");
  return {
    hidden: button.hidden || button.offsetParent === null,
    health: button.dataset.health || null,
    label: button.querySelector(".connectors-label").textContent,
    count: count.textContent,
    countColour: getComputedStyle(count).color,
    dotColour: getComputedStyle(button.querySelector(".connectors-dot")).backgroundColor,
    expanded: button.getAttribute("aria-expanded"),
  };
}"""

# Every row of the open panel, as shown.
ROWS_JS = """() => [...document.querySelectorAll("#connectors-table tbody.connector")].map((b) => {
  const error = b.querySelector(".connector-error");
  const cell = (col) => b.querySelector(`[data-col="${col}"]`).textContent;
  return {
    name: b.querySelector(".connector-name").textContent,
    kind: b.querySelector(".connector-kind").textContent,
    state: b.dataset.state,
    label: b.querySelector(".connector-state").textContent,
    badgeColour: getComputedStyle(b.querySelector(".connector-state")).borderTopColor,
    rate: cell("rate"),
    latency: cell("latency"),
    errors: cell("errors"),
    reconnects: cell("reconnects"),
    errorShown: error.offsetHeight > 0,
    error: error.textContent,
    errorFont: getComputedStyle(error).fontFamily,
    errorOverflows: error.scrollWidth > error.clientWidth,
  };
})"""

# The open panel's box, and whether it lies inside the window.
PANEL_BOX_JS = """() => {
  const panel = document.getElementById("connectors-panel");
  if (panel.hidden) return null;
  const r = panel.getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
          inside: r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight};
}"""

PANEL_OPEN_JS = "() => !document.getElementById('connectors-panel').hidden"
PANEL_CLOSED_JS = "() => document.getElementById('connectors-panel').hidden"


async def test_connections_indicator_and_panel_show_the_demo_simulator(
    demo_url: str,
    demo_user: Provisioned,
    browser: Browser,
    wait_for: WaitFor,
    open_page: OpenPage,
) -> None:
    async with httpx.AsyncClient(timeout=5.0, headers=demo_user.headers) as http:
        served = (await http.get(f"{demo_url}/api/v1/connectors")).json()["connectors"]
    assert [(c["name"], c["kind"]) for c in served] == [("simulator", "simulator")]

    page, errors = await open_page(browser, width=1920, height=1080)
    await page.goto(demo_url + "/")
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').dataset.health === 'ok'",
        None,
        "the connections indicator did not turn green",
    )
    indicator = await page.evaluate(INDICATOR_JS)
    assert not indicator["hidden"]
    assert indicator["label"] == "Connections"
    assert indicator["count"] == "1/1"
    assert indicator["countColour"] == GREEN
    assert indicator["dotColour"] == GREEN
    assert indicator["expanded"] == "false"

    # A trend is open underneath: Esc must close the panel first, not both.
    await wait_for(page, "() => document.querySelector('.card button.tag-row')", None, "no tag row")
    await page.locator(".card button.tag-row").first.click()
    await wait_for(page, "() => !document.getElementById('trend').hidden", None, "no trend opened")

    # Opened from the keyboard, the panel takes the focus.
    await page.focus("#connectors-btn")
    await page.keyboard.press("Enter")
    await wait_for(page, PANEL_OPEN_JS, None, "Enter on the indicator did not open the panel")
    assert await page.get_attribute("#connectors-btn", "aria-expanded") == "true"
    assert await page.evaluate(
        "() => document.getElementById('connectors-panel').contains(document.activeElement)"
    )
    await wait_for(
        page,
        f"() => ({ROWS_JS})().some((r) => r.name === 'simulator' && /\\d/.test(r.rate))",
        None,
        "the panel did not list the simulator with a read rate",
    )
    rows = await page.evaluate(ROWS_JS)
    assert [r["name"] for r in rows] == ["simulator"]
    row = rows[0]
    assert (row["kind"], row["state"], row["label"]) == ("simulator", "active", "Active")
    assert row["badgeColour"] == GREEN
    assert float(row["rate"].replace(",", "")) > 0, row
    assert re.fullmatch(r"<? ?[\d.,]+ (ms|s)", row["latency"]), row
    assert row["errors"].isdigit(), row
    assert row["reconnects"].isdigit(), row
    assert not row["errorShown"], "an active connector shows no error block"
    assert (await page.evaluate(PANEL_BOX_JS))["inside"]
    await page.screenshot(path=str(ARTIFACTS / "connections-panel-1920x1080.png"))

    await page.set_viewport_size({"width": 1024, "height": 768})
    await page.wait_for_timeout(300)
    box = await page.evaluate(PANEL_BOX_JS)
    assert box is not None, "the panel closed"
    assert box["inside"], f"the panel leaves a 1024x768 window: {box}"
    await page.screenshot(path=str(ARTIFACTS / "connections-panel-1024x768.png"))

    await page.keyboard.press("Escape")
    await wait_for(page, PANEL_CLOSED_JS, None, "Esc did not close the panel")
    assert await page.evaluate("() => document.activeElement.id") == "connectors-btn"
    assert await page.get_attribute("#connectors-btn", "aria-expanded") == "false"
    assert await page.evaluate("() => !document.getElementById('trend').hidden"), (
        "Esc closed the trend under the panel too"
    )

    # A click elsewhere on the page closes it as well.
    await page.click("#connectors-btn")
    await wait_for(page, PANEL_OPEN_JS, None, "a click on the indicator did not open the panel")
    await page.click(".brand-name")
    await wait_for(page, PANEL_CLOSED_JS, None, "a click outside did not close the panel")
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


LONG_ERROR = (
    "ConnectorUnavailable: modbus 10.0.12.7:502 unit 3 did not answer within 2.0 s "
    "(5 attempts) reading holding registers 40001-40125 for poll group 'fast'\n"
    "caused by: ConnectionRefusedError(111, \"Connect call failed ('10.0.12.7', 502)\")\n"
    "certificate: /var/lib/shopfloor/pki/trusted/"
    "line2-press-plc-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.der"
)


def _connector(name: str, kind: str, state: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "name": name,
        "kind": kind,
        "state": state,
        "last_error": None,
        "reads": 1200,
        "points": 48_000,
        "errors": 0,
        "reconnects": 0,
        "last_read_ms": 12.5,
        "reads_per_s": 2.0,
    }
    row.update(extra)
    return row


def _check_mixed_rows(shown: list[dict[str, Any]]) -> None:
    """The panel's rows for the four connectors of the mixed-state test."""
    rows = {str(r["name"]): r for r in shown}
    # Worst first, so a failing connection is never below the fold of a long list.
    assert list(rows) == ["line2-modbus", "s7-oven", "line2-mqtt", "press-opcua"]
    degraded = rows["line2-modbus"]
    assert degraded["label"] == "Degraded"
    assert degraded["badgeColour"] == RED
    assert (degraded["errors"], degraded["reconnects"]) == ("17", "4")
    assert degraded["latency"] == "2.0 s"
    assert degraded["errorShown"]
    assert degraded["error"] == LONG_ERROR, "the last error is shown in full"
    assert "monospace" in degraded["errorFont"]
    assert not degraded["errorOverflows"], "the last error wraps inside the panel"
    assert rows["s7-oven"]["errorShown"]
    assert rows["line2-mqtt"]["badgeColour"] == AMBER
    assert not rows["line2-mqtt"]["errorShown"], "only failing connectors show their error"
    assert rows["press-opcua"]["latency"] == "12.5 ms"


async def test_connections_panel_colours_by_the_worst_state_and_shows_errors_in_full(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1024, height=768)
    # The page's view of a bigger plant: a fixed answer in place of the demo's one connector.
    payload: dict[str, list[dict[str, object]]] = {
        "connectors": [
            _connector("press-opcua", "opcua", "active"),
            _connector("line2-mqtt", "mqtt", "idle", last_error="no message for 60 s"),
        ]
    }

    unreachable = False

    async def answer(route: Route) -> None:
        if unreachable:
            await route.abort("connectionrefused")
        else:
            await route.fulfill(json=payload)

    await page.route("**/api/v1/connectors", answer)
    await page.goto(demo_url + "/")
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').dataset.health === 'warn'",
        None,
        "an idle connector did not turn the indicator amber",
    )
    indicator = await page.evaluate(INDICATOR_JS)
    assert (indicator["count"], indicator["countColour"]) == ("1/2", AMBER)

    payload["connectors"] = [
        *payload["connectors"],
        _connector(
            "line2-modbus",
            "modbus",
            "degraded",
            last_error=LONG_ERROR,
            errors=17,
            reconnects=4,
            reads_per_s=0.0,
            last_read_ms=2003.4,
        ),
        _connector("s7-oven", "s7", "stopped", last_error="stopped by configuration"),
    ]
    await page.click("#connectors-btn")  # opening the panel fetches fresh figures
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').dataset.health === 'bad'",
        None,
        "a degraded connector did not turn the indicator red",
    )
    indicator = await page.evaluate(INDICATOR_JS)
    assert (indicator["count"], indicator["countColour"], indicator["dotColour"]) == (
        "1/4",
        RED,
        RED,
    )
    _check_mixed_rows(await page.evaluate(ROWS_JS))
    box = await page.evaluate(PANEL_BOX_JS)
    assert box is not None, "the panel closed"
    assert box["inside"], f"the panel leaves a 1024x768 window: {box}"
    await page.screenshot(path=str(ARTIFACTS / "connections-degraded-1024x768.png"))
    await page.set_viewport_size({"width": 1920, "height": 1080})
    await page.wait_for_timeout(300)
    await page.screenshot(path=str(ARTIFACTS / "connections-degraded-1920x1080.png"))

    # Closing and reopening the panel asks at once rather than at the next 5 s poll.
    async def reopen() -> None:
        await page.click("#connectors-btn")
        await wait_for(page, PANEL_CLOSED_JS, None, "a click on the indicator did not close it")
        await page.click("#connectors-btn")

    # The server cannot be reached: the last figures stay, marked as not fresh.
    unreachable = True
    await reopen()
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').dataset.stale === 'true'",
        None,
        "a failed refresh was not shown",
    )
    assert (await page.evaluate(INDICATOR_JS))["count"] == "1/4"
    assert (await page.text_content("#connectors-sub") or "").startswith("Could not refresh:")
    assert len(await page.evaluate(ROWS_JS)) == 4
    unreachable = False

    # The server stops running connectors: the indicator and its open panel go away.
    payload["connectors"] = []
    await reopen()
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').hidden"
        " && document.getElementById('connectors-panel').hidden",
        None,
        "the indicator stayed with no connector",
    )
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_connections_panel_speaks_simplified_chinese(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1024, height=768)
    await page.goto(demo_url + "/?lang=zh-CN")
    await wait_for(
        page,
        "() => document.getElementById('connectors-btn').dataset.health === 'ok'",
        None,
        "the connections indicator did not turn green",
    )
    assert (await page.evaluate(INDICATOR_JS))["label"] == "连接"
    await page.click("#connectors-btn")
    await wait_for(
        page,
        f"() => ({ROWS_JS})().some((r) => r.name === 'simulator')",
        None,
        "the panel did not list the simulator",
    )
    rows = await page.evaluate(ROWS_JS)
    assert rows[0]["label"] == "正常"
    assert await page.text_content("#connectors-title") == "连接状态"
    await page.screenshot(path=str(ARTIFACTS / "connections-panel-zh-CN-1024x768.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"
