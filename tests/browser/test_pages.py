"""The plant overview and the machine page in a real headless Chromium against the demo.

The overview must show every machine of the asset tree with its live state colour, the
OEE of the current shift exactly as the API answered the page's own query, and its count
of standing alarms; a tile leads to the machine page, whose live values move. Both pages
switch to Simplified Chinese, fit a tablet (768 px wide) and leave screenshots in
``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Response

from shopfloor.testing.auth import Provisioned, provision
from shopfloor.testing.processes import free_port, shopfloor_process

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor


HEADERS: dict[str, str] = {}
"""The demo's API token (of the logged-in user ``tester``), for this module's own requests."""


@pytest.fixture(autouse=True)
def _demo_token(demo_user: Provisioned) -> None:
    HEADERS.update(demo_user.headers)


pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STATES = {"running", "idle", "setup", "down"}

TILES_JS = """() => [...document.querySelectorAll("#floor .tile")].map((tile) => {
  // The colour the state should show, resolved by the browser from the stylesheet's variable.
  const probe = document.createElement("span");
  probe.style.color = `var(--state-${tile.dataset.state})`;
  document.body.append(probe);
  const expected = getComputedStyle(probe).color;
  probe.remove();
  return {
    id: tile.dataset.equipment,
    href: tile.getAttribute("href"),
    state: tile.dataset.state,
    stateText: tile.querySelector(".tile-state-label").textContent,
    colour: getComputedStyle(tile).borderTopColor,
    expected,
    oee: tile.dataset.oee ?? null,
    oeeText: tile.querySelector(".tile-oee-value").textContent,
    alarms: tile.dataset.alarms ?? null,
  };
})"""

# Every live value of the machine page keyed by its tag path.
VALUES_JS = """() => Object.fromEntries(
  [...document.querySelectorAll("#values-body tr[data-tag]")].map(
    (row) => [row.dataset.tag, row.querySelector(".value").textContent])
)"""

TREND_POINTS_JS = """() => {
  const chart = window.echarts && window.echarts.getInstanceByDom(
    document.getElementById("trend-chart"));
  if (!chart) return 0;
  return (chart.getOption().series || []).reduce((n, s) => n + (s.data || []).length, 0);
}"""

# Text a page shows through data-i18n, with the key it came from.
I18N_JS = """() => [...document.querySelectorAll("[data-i18n]")].map(
  (el) => [el.dataset.i18n, el.textContent.trim()])"""


def _equipment(tree: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node["level"] == "equipment":
            found.append(node)
        stack.extend(node.get("children", []))
    return found


def _fits(width: int) -> str:
    return f"() => document.documentElement.scrollWidth <= {width}"


async def test_overview_shows_every_machine_with_its_state_shift_oee_and_alarms(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS, timeout=10) as client:
        machines = _equipment((await client.get("/api/v1/assets")).json())
    with_state = {m["name"] for m in machines if "state" in m["tags"]}
    assert len(machines) >= 5, "the demo plant has its machines"
    assert with_state, "the demo plant has machines with states"

    page, errors = await open_page(browser, width=1920, height=1080)
    answers: list[Response] = []
    page.on("response", lambda r: answers.append(r) if "/api/v1/" in r.url else None)
    await page.goto(demo_url + "/overview")
    await wait_for(
        page,
        "(n) => document.querySelectorAll('#floor .tile').length === n",
        len(machines),
        f"the overview did not show {len(machines)} machine tiles",
    )
    await wait_for(
        page,
        "(ids) => ids.every((id) => ['running', 'idle', 'setup', 'down'].includes("
        "document.querySelector(`.tile[data-equipment='${id}']`).dataset.state))",
        sorted(with_state),
        "a machine with a state tag shows no state colour",
    )
    await wait_for(
        page,
        "() => [...document.querySelectorAll('#floor .tile')].every("
        "(t) => t.dataset.oee !== undefined && t.dataset.alarms !== undefined)",
        None,
        "the tiles did not get their OEE and alarm count",
    )
    tiles = {t["id"]: t for t in await page.evaluate(TILES_JS)}
    assert set(tiles) == {m["name"] for m in machines}
    for machine_id, tile in tiles.items():
        assert tile["href"].endswith(f"/machines/{machine_id}")
        if machine_id in with_state:
            assert tile["state"] in STATES, tile
            assert tile["colour"] == tile["expected"], f"{machine_id} is not in its state's colour"
        else:
            assert tile["state"] == "none", tile
    oee_machines = await _check_oee_and_alarms(answers, tiles, machines)
    await page.screenshot(path=str(ARTIFACTS / "overview-1920x1080.png"))

    # A tablet: one column, nothing wider than the screen.
    await page.set_viewport_size({"width": 768, "height": 1024})
    await wait_for(page, _fits(768), None, "the overview is wider than a 768 px tablet")
    await page.screenshot(path=str(ARTIFACTS / "overview-768x1024.png"))

    # The tree narrows the floor to one line, and the plant's root shows it all again.
    line = next(m["path"] for m in machines if m["name"] == "imm-01").rsplit("/", 2)[0]
    await page.click(f".tree-label[data-scope='{line}']")
    shown = await page.evaluate(
        "() => [...document.querySelectorAll('#floor .tile')]"
        ".filter((t) => t.offsetParent !== null).map((t) => t.dataset.equipment)"
    )
    assert sorted(shown) == sorted(m["name"] for m in machines if m["path"].startswith(line))
    await page.click(".tree-label[data-scope='']")
    assert await page.locator("#floor .tile:visible").count() == len(machines)

    first = sorted(with_state & oee_machines)[0]
    await page.click(f".tile[data-equipment='{first}']")
    await page.wait_for_url(f"**/machines/{first}")
    assert await page.text_content("#machine-name") == first

    # "Alarms" in the navigation opens the standing alarms on the live page.
    await page.click(".menu a[href$='/#alarms']")
    await page.wait_for_selector("#alarms-panel", state="visible")
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def _check_oee_and_alarms(
    answers: list[Response], tiles: dict[str, dict[str, Any]], machines: list[dict[str, Any]]
) -> set[str]:
    """Each tile holds exactly what the API answered the page's own (latest) queries: the
    OEE of the current shift and the count of standing alarms. Returns the OEE machines."""
    by_machine: dict[str, dict[str, Any]] = {}
    oee_machines: set[str] = set()
    alarms: list[dict[str, Any]] | None = None
    for response in answers:
        query = parse_qs(urlsplit(response.url).query)
        path = urlsplit(response.url).path
        if path == "/api/v1/oee" and response.ok:
            body = await response.json()
            if query.get("group") == ["none"]:
                oee_machines = set(body["equipment"])
            elif query.get("group") == ["shift"]:
                assert query["equipment"] == body["equipment"]
                by_machine[body["equipment"][0]] = body
        elif path == "/api/v1/alarms" and response.ok:
            alarms = await response.json()
    assert oee_machines, "the page did not ask which machines have an OEE"
    assert set(by_machine) == oee_machines, "one shift query per machine with an OEE"
    for machine_id, tile in tiles.items():
        if machine_id not in oee_machines:
            assert tile["oee"] == "none", tile
            continue
        row = by_machine[machine_id]["rows"][-1]
        assert row["shift"], f"the last row of {by_machine[machine_id]} is the current shift"
        if row["oee"] is None:
            assert tile["oee"] == "null", tile
        else:
            assert float(tile["oee"]) == row["oee"], (tile, row)
            assert re.fullmatch(r"\d{1,3}(\.\d)?%", tile["oeeText"]), tile
    assert alarms is not None, "the page did not ask for the standing alarms"
    for machine in machines:
        standing = sum(1 for a in alarms if a["tag"].startswith(machine["path"] + "/"))
        assert tiles[machine["name"]]["alarms"] == str(standing), machine["name"]
    return oee_machines


async def test_machine_page_shows_moving_values_a_trend_and_the_shift(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1920, height=1080)
    await page.goto(demo_url + "/machines/cnc-02")
    await wait_for(
        page,
        "() => document.getElementById('conn').dataset.state === 'live'",
        None,
        "the live connection did not come up",
    )
    await wait_for(
        page,
        "() => [...document.querySelectorAll('#values-body .value')]"
        ".some((v) => /\\d/.test(v.textContent))",
        None,
        "no live value shows a number",
    )
    first: dict[str, str] = await page.evaluate(VALUES_JS)
    assert all("/cnc-02/" in path for path in first), "only this machine's tags"
    await wait_for(
        page,
        f"(first) => Object.entries(({VALUES_JS})()).some(([p, v]) => first[p] !== v)",
        first,
        "no live value changed",
    )
    assert await page.get_attribute("#machine-state", "data-state") in STATES
    await wait_for(page, f"() => ({TREND_POINTS_JS})() > 0", None, "the trend drew no points")
    await wait_for(
        page,
        "() => 'value' in document.getElementById('oee-oee').dataset"
        " && document.querySelectorAll('#oee-losses .loss').length === 5",
        None,
        "the shift's OEE and its losses did not show",
    )
    # A shift just begun in a fresh demo may have no OEE yet (no part made): "–" then.
    shown = await page.evaluate(
        "() => [...document.querySelectorAll('#oee-kpis dd')].map((d) => d.textContent)"
    )
    assert all(re.fullmatch(r"\d{1,3}(\.\d)?%|–", text) for text in shown), shown
    await wait_for(
        page,
        "() => document.querySelectorAll('#timeline-axis span').length === 5"
        " && !document.getElementById('timeline').hasAttribute('data-empty')",
        None,
        "the state timeline of the shift did not draw",
    )
    await wait_for(
        page,
        "() => document.getElementById('health-anomaly-msg').textContent"
        " && (document.querySelector('#malarms-body tr')"
        " || !document.getElementById('malarms-msg').hidden)",
        None,
        "the health and alarm sections did not fill",
    )
    await page.screenshot(path=str(ARTIFACTS / "machine-1920x1080.png"))

    # Another value trended by a click on its row.
    target = next(p for p in first if p.endswith("/power_kw"))
    async with page.expect_response(lambda r: "/series" in r.url) as answer:
        await page.click(f"#values-body tr[data-tag='{target}']")
    assert (await answer.value).ok
    assert "power kw" in (await page.text_content("#trend-title") or "")

    await page.set_viewport_size({"width": 768, "height": 1024})
    await wait_for(page, _fits(768), None, "the machine page is wider than a 768 px tablet")
    await page.screenshot(path=str(ARTIFACTS / "machine-768x1024.png"))

    # A conveyor counts no parts: it has stops and a timeline but no OEE, and says so.
    await page.goto(demo_url + "/machines/conv-01")
    await wait_for(
        page,
        "() => !document.getElementById('oee-msg').hidden",
        None,
        "a machine without parts did not say why it has no OEE",
    )
    assert await page.text_content("#oee-msg") == "This machine counts no parts: it has no OEE."
    assert await page.is_hidden("#oee-kpis")
    # The energy meter has no state tag: one line instead of the timeline, OEE and stops.
    await page.goto(demo_url + "/machines/mtr-main")
    await wait_for(
        page,
        "() => document.querySelector('#values-body .value')"
        " && !document.getElementById('no-state').hidden",
        None,
        "a machine without a state tag did not say so",
    )
    for section in (".panel-timeline", ".panel-oee", ".panel-downtime", "#machine-state"):
        assert await page.is_hidden(section), section
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_pages_switch_to_simplified_chinese_and_remember_it(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    await page.goto(demo_url + "/overview")
    assert await page.text_content("#overview-title") == "Plant overview"
    async with page.expect_navigation():
        await page.select_option("#lang-select", "zh-CN")
    await wait_for(
        page,
        "() => document.querySelectorAll('#floor .tile .tile-state-label').length",
        None,
        "the overview did not draw its tiles in Chinese",
    )
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    assert await page.text_content("#overview-title") == "工厂总览"
    assert await page.text_content(".menu [aria-current=page]") == "总览"
    await wait_for(
        page,
        "() => [...document.querySelectorAll('.tile-state-label')]"
        ".every((l) => /[\\u4e00-\\u9fff]/.test(l.textContent))",
        None,
        "a machine state was not translated",
    )
    await wait_for(
        page,
        "() => [...document.querySelectorAll('#floor .tile')].every((t) => t.dataset.oee)",
        None,
        "the tiles did not get their OEE",
    )
    _all_chinese(await page.evaluate(I18N_JS), "overview")
    await page.screenshot(path=str(ARTIFACTS / "overview-zh-CN-1280x800.png"))

    # The choice is remembered: a plain link opens the machine page in Chinese too.
    await page.goto(demo_url + "/machines/cnc-01")
    await wait_for(
        page,
        "() => document.querySelectorAll('#oee-losses .loss').length === 5",
        None,
        "the machine page did not show its OEE losses",
    )
    assert await page.text_content("#oee-title") == "本班次 OEE"
    assert await page.text_content("#machine-state") in {"运行", "空闲", "调试", "停机", "未知"}
    _all_chinese(await page.evaluate(I18N_JS), "machine page")
    await page.screenshot(path=str(ARTIFACTS / "machine-zh-CN-1280x800.png"))

    missing = await page.goto(demo_url + "/machines/no-such-machine")
    assert missing is not None
    assert missing.status == 404
    await wait_for(
        page,
        "() => document.querySelector('h1').textContent === '未找到'",
        None,
        "the 404 page was not translated",
    )
    assert await page.text_content("#missing-id") == "no-such-machine"
    await page.screenshot(path=str(ARTIFACTS / "machine-not-found-zh-CN.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


def _all_chinese(shown: list[list[str]], where: str) -> None:
    """Every translated text holds Chinese, but for names that stay as they are (OEE)."""
    untranslated = [
        (key, text)
        for key, text in shown
        if text not in {"OEE"} and not re.search(r"[\u4e00-\u9fff]", text)
    ]
    assert not untranslated, f"the {where} shows untranslated strings: {untranslated}"


HEALTH_CONFIG = """
[server]
port = {port}
data_dir = "data"

[simulator]
enabled = true
speed = 50
backfill = "1h"

[analytics.anomaly]
enabled = true

[analytics.rul]
enabled = true
"""


@pytest.fixture(scope="module")
def health_url(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Provisioned]]:
    """A server of the simulated plant that runs the anomaly monitor and RUL estimates, and
    its user ``tester``."""
    workdir = tmp_path_factory.mktemp("health")
    port = free_port()
    (workdir / "shopfloor.toml").write_text(HEALTH_CONFIG.format(port=port))
    user = provision(workdir / "data", role="viewer", user="tester")
    # As long to start as the shared demo may take (conftest's STARTUP_S) on a busy machine.
    with shopfloor_process(
        ["server", "--config", "shopfloor.toml"], port=port, workdir=workdir, ready_timeout_s=40
    ) as server:
        yield server.base_url, user


async def test_machine_health_shows_what_the_monitors_answer(
    health_url: tuple[str, Provisioned], browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    url, user = health_url
    page, errors = await open_page(browser, width=1280, height=800, logged_in=False)
    login = {"name": user.user, "password": user.password}
    assert (await page.request.post(f"{url}/api/v1/auth/login", data=login)).ok
    answers: dict[str, Response] = {}
    page.on(
        "response",
        lambda r: (
            answers.setdefault(urlsplit(r.url).path, r)
            if urlsplit(r.url).path in ("/api/v1/anomaly", "/api/v1/rul")
            else None
        ),
    )
    await page.goto(url + "/machines/cnc-01")
    await wait_for(
        page,
        "() => document.getElementById('health-anomaly-msg').textContent"
        " && document.getElementById('health-rul-msg').textContent",
        None,
        "the health section did not fill",
    )
    anomaly = await answers["/api/v1/anomaly"].json()
    rul = (await answers["/api/v1/rul"].json())["machines"][0]
    assert anomaly["machines"][0]["id"] == "cnc-01"
    latest = anomaly["machines"][0]["latest"]
    message = await page.text_content("#health-anomaly-msg") or ""
    score = await page.text_content("#health-score")
    if latest is None:
        assert (message, score) == ("No score yet.", "–")
    else:
        assert message.startswith("Latest score at"), message
        assert score != "–"
    rul_message = await page.text_content("#health-rul-msg") or ""
    expected = {
        "estimate": "Reaches",
        "no_estimate": f"No estimate: {rul.get('reason')}",
        "pending": "Not estimated yet.",
    }[rul["status"]]
    assert rul_message.startswith(expected), (rul_message, rul)
    # The page scrolls inside its main area: a picture of the section itself.
    await page.locator(".panel-health").screenshot(path=str(ARTIFACTS / "machine-health.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"
