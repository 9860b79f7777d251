"""The alarm panel as an operator uses it, in a real headless Chromium.

The page is served by the real demo (``demo_url``); the alarm API is answered by routes
faked here, which record what the page asks and posts, except in the last test, which
reads the demo's own journal and KPIs. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route

from shopfloor.testing.auth import Provisioned

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

VIB = "acme/plant-1/machining/line-1/cell-2/cnc-02/vibration_rms.HH"
AIR = "acme/plant-1/utilities/air/compressors/comp-01/pressure.L"
OIL = "acme/plant-1/press/line-1/cell-1/press-1/oil_temp.H"
PUMP = "acme/plant-1/utilities/water/pumps/pump-02/state.state"

ALARMS = re.compile(r"/api/v1/alarms(\?.*)?$")
JOURNAL = re.compile(r"/api/v1/alarms/journal(\?.*)?$")
KPIS = re.compile(r"/api/v1/alarms/kpis(\?.*)?$")
ACTION = re.compile(r"/api/v1/alarms/(acknowledge|shelve|unshelve|comment)$")
ME = re.compile(r"/api/v1/auth/me$")

ALARM_ROWS_JS = """() => [...document.querySelectorAll('#alarms-table tr.alarm')].map((r) => {
  const col = (c) => r.querySelector(`[data-col="${c}"]`).textContent;
  return {
    name: r.dataset.alarm, health: r.dataset.health, message: r.querySelector('.connector-name')
      .textContent, priority: col('priority'), state: col('state'), value: col('value'),
    actions: [...r.querySelectorAll('button[data-action]')].map((b) => b.textContent),
  };
})"""

JOURNAL_ROWS_JS = """() => [...document.querySelectorAll('#journal-table tr.journal-entry')].map(
  (r) => ({seq: Number(r.dataset.seq),
           ...Object.fromEntries([...r.cells].map((c) => [c.dataset.col, c.textContent]))})
)"""

KPI_FIGURES_JS = """() => Object.fromEntries(
  [...document.querySelectorAll('#kpi-figures tr[data-kpi]')].map((r) => [r.dataset.kpi, {
    label: r.cells[0].textContent,
    value: r.cells[1].textContent,
    health: r.dataset.health || null,
  }]))"""


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alarm(name: str, state: str, priority: str, message: str, **extra: object) -> dict[str, Any]:
    alarm: dict[str, Any] = {
        "name": name,
        "tag": name.rsplit(".", 1)[0],
        "kind": "H",
        "priority": priority,
        "limit": 4.5,
        "state": state,
        "condition": state != "returned_unacknowledged",
        "since": "2026-11-29T05:00:00.000Z",
        "shelved_until": None,
        "value": 5.2,
        "message": message,
    }
    alarm.update(extra)
    return alarm


def _entry(seq: int, alarm: str, event: str, before: str, after: str, **extra: object) -> dict:
    entry: dict[str, Any] = {
        "seq": seq,
        "alarm": alarm,
        "event": event,
        "time": _iso(dt.datetime(2026, 11, 29, 5, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=seq)),
        "before": before,
        "after": after,
        "user": "",
        "comment": "",
        "value": None,
    }
    entry.update(extra)
    return entry


class FakeAlarmApi:
    """The alarm endpoints as the page sees them: answers from attributes, requests recorded."""

    def __init__(self, standing: list[dict[str, Any]]) -> None:
        self.standing = standing
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.failure: tuple[int, dict[str, Any]] | None = None  # the next POST's answer
        self.journal: list[dict[str, Any]] = []
        self.journal_queries: list[dict[str, str]] = []
        self.kpis: dict[str, Any] = {}
        self.kpi_queries: list[dict[str, str]] = []
        self.me: dict[str, Any] | None = None  # who /auth/me says is logged in (None: 404)

    async def install(self, page: Page) -> None:
        await page.route(ME, self._me)
        await page.route(ALARMS, self._alarms)
        await page.route(JOURNAL, self._journal)
        await page.route(KPIS, self._kpis)
        await page.route(ACTION, self._action)

    async def _alarms(self, route: Route) -> None:
        await route.fulfill(json=self.standing)

    async def _me(self, route: Route) -> None:
        if self.me is None:  # a server that names nobody: the operator types a name
            await route.fulfill(status=404, json={"error": {"code": "not_found"}})
        else:
            await route.fulfill(json=self.me)

    async def _action(self, route: Route) -> None:
        action = urlsplit(route.request.url).path.rsplit("/", 1)[1]
        body = route.request.post_data_json
        self.posted.append((action, body))
        if self.failure is not None:
            (status, error), self.failure = self.failure, None
            await route.fulfill(status=status, json={"error": error})
            return
        await route.fulfill(
            json={**_entry(0, body["alarm"], action, "normal", "normal"), "seq": None}
        )

    def fail(self, status: int, code: str, field: str | None, message: str) -> None:
        """Answer the next POST with this error envelope."""
        self.failure = (status, {"code": code, "field": field, "message": message})

    async def _journal(self, route: Route) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(route.request.url).query).items()}
        self.journal_queries.append(query)
        before = int(query.get("before_seq", "1000000000"))
        limit = int(query.get("limit", "1000"))
        rows = [e for e in self.journal if e["seq"] < before]
        if query.get("order") == "desc":
            rows.reverse()
        if "alarm" in query:
            rows = [e for e in rows if e["alarm"] == query["alarm"]]
        await route.fulfill(json=rows[:limit])

    async def _kpis(self, route: Route) -> None:
        self.kpi_queries.append(
            {k: v[-1] for k, v in parse_qs(urlsplit(route.request.url).query).items()}
        )
        await route.fulfill(json=self.kpis)


async def _open_alarms(page: Page, wait_for: WaitFor) -> None:
    await wait_for(
        page, "() => !document.getElementById('alarms-btn').hidden", None, "no alarm indicator"
    )
    await page.click("#alarms-btn")
    await wait_for(
        page, "() => document.querySelector('#alarms-table tr.alarm')", None, "no alarm rows"
    )


async def _name_operator(page: Page, name: str) -> None:
    await page.fill("#alarms-operator", name)
    await page.dispatch_event("#alarms-operator", "change")


async def test_standing_alarms_show_state_priority_value_and_acknowledge_with_a_comment(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    api = FakeAlarmApi(
        [
            _alarm(VIB, "unacknowledged", "critical", "Vibration 7.4 mm/s above 7.1", value=7.4),
            _alarm(AIR, "acknowledged", "high", "Air pressure 5.8 bar, below 6.0", value=5.8),
            _alarm(OIL, "returned_unacknowledged", "medium", "Oil temperature 81.0 above 80"),
            _alarm(PUMP, "shelved", "low", "Pump 2 tripped", shelved_until=_iso(until)),
            _alarm(
                "acme/plant-1/press/line-1/cell-1/press-1/pressure.HH",
                "out_of_service",
                "high",
                "Press pressure high",
                value=None,
            ),
        ]
    )
    await api.install(page)
    await page.goto(demo_url + "/")
    await wait_for(
        page,
        "() => document.getElementById('alarms-btn').dataset.health === 'bad'",
        None,
        "an unacknowledged critical alarm did not turn the indicator red",
    )
    assert await page.text_content("#alarms-count") == "5"
    await _open_alarms(page, wait_for)
    until_text = await page.evaluate(
        "(iso) => new Date(iso).toLocaleTimeString('en', {hour12: false})", _iso(until)
    )
    rows = await page.evaluate(ALARM_ROWS_JS)
    assert [(r["health"], r["priority"], r["state"], r["value"], r["actions"]) for r in rows] == [
        ("bad", "Critical", "Unacknowledged", "7.40", ["Acknowledge", "Shelve", "Comment"]),
        ("ok", "High", "Acknowledged", "5.80", ["Shelve", "Comment"]),
        (
            "warn",
            "Medium",
            "Returned, unacknowledged",
            "5.20",
            ["Acknowledge", "Shelve", "Comment"],
        ),
        ("ok", "Low", f"Shelved until {until_text}", "5.20", ["Unshelve", "Comment"]),
        ("ok", "High", "Out of service", "—", ["Comment"]),
    ]
    assert rows[0]["message"] == "Vibration 7.4 mm/s above 7.1"

    # No name: nothing is sent, the form says why.
    await page.click(f"#alarms-table button[data-action=acknowledge][data-alarm='{VIB}']")
    assert await page.is_visible("#alarm-action")
    assert "Vibration 7.4" in (await page.text_content("#alarm-action-title") or "")
    assert not await page.is_visible("#alarm-action-duration"), "acknowledge asks no duration"
    await page.click("#alarm-action-submit")
    assert "Enter your name" in (await page.text_content("#alarm-action-error") or "")
    assert api.posted == []

    # The comment is optional: with one, it goes along.
    await _name_operator(page, "Li Wei")
    await page.fill("#alarm-action-comment", "bearing checked, running on")
    await page.click("#alarm-action-submit")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted == [
        ("acknowledge", {"alarm": VIB, "user": "Li Wei", "comment": "bearing checked, running on"})
    ]
    # Without one, an empty comment.
    await page.click(f"#alarms-table button[data-action=acknowledge][data-alarm='{OIL}']")
    await page.click("#alarm-action-submit")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted[1] == ("acknowledge", {"alarm": OIL, "user": "Li Wei", "comment": ""})
    await page.screenshot(path=str(ARTIFACTS / "alarms-panel-1280x800.png"))

    # The name is remembered, and the panel speaks Chinese.
    await page.goto(demo_url + "/?lang=zh-CN")
    await _open_alarms(page, wait_for)
    assert await page.input_value("#alarms-operator") == "Li Wei"
    assert await page.text_content("#alarms-btn .connectors-label") == "报警"
    rows = await page.evaluate(ALARM_ROWS_JS)
    assert [r["state"] for r in rows][:3] == ["未确认", "已确认", "已恢复，未确认"]
    assert rows[0]["actions"] == ["确认", "搁置", "备注"]
    assert rows[3]["actions"] == ["取消搁置", "备注"]
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_shelve_posts_the_chosen_duration_and_reason_and_shows_api_errors(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    api = FakeAlarmApi(
        [
            _alarm(VIB, "unacknowledged", "critical", "Vibration 7.4 mm/s above 7.1"),
            _alarm(AIR, "acknowledged", "high", "Air pressure 5.8 bar, below 6.0"),
        ]
    )
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await _name_operator(page, "Zhang Min")

    await page.click(f"#alarms-table button[data-action=shelve][data-alarm='{VIB}']")
    assert await page.is_visible("#alarm-action-duration")
    options = await page.eval_on_selector_all(
        "#alarm-action-duration option", "(os) => os.map((o) => [o.value, o.textContent])"
    )
    assert options == [["15m", "15 minutes"], ["1h", "1 hour"], ["8h", "8 hours"]]
    await page.select_option("#alarm-action-duration", "8h")
    # A shelve needs a reason.
    await page.click("#alarm-action-submit")
    assert "reason" in (await page.text_content("#alarm-action-error") or "")
    assert api.posted == []
    await page.fill("#alarm-action-comment", "sensor being replaced, work order 4711")
    await page.screenshot(path=str(ARTIFACTS / "alarms-shelve-1280x800.png"))
    await page.click("#alarm-action-submit")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted == [
        (
            "shelve",
            {
                "alarm": VIB,
                "user": "Zhang Min",
                "duration": "8h",
                "comment": "sensor being replaced, work order 4711",
            },
        )
    ]

    # The API refuses: its words are shown in the form, which stays open with the input.
    api.fail(422, "invalid_parameter", "duration", "a shelve lasts up to 24 hours")
    await page.click(f"#alarms-table button[data-action=shelve][data-alarm='{AIR}']")
    await page.select_option("#alarm-action-duration", "15m")
    await page.fill("#alarm-action-comment", "compressor 2 starting")
    await page.click("#alarm-action-submit")
    await wait_for(
        page,
        "() => !document.getElementById('alarm-action-error').hidden",
        None,
        "the API's error was not shown",
    )
    shown = await page.text_content("#alarm-action-error") or ""
    assert shown == "Not done: 422: a shelve lasts up to 24 hours (duration)"
    assert await page.is_visible("#alarm-action")
    assert await page.input_value("#alarm-action-comment") == "compressor 2 starting"
    assert api.posted[-1] == (
        "shelve",
        {"alarm": AIR, "user": "Zhang Min", "duration": "15m", "comment": "compressor 2 starting"},
    )
    # Polls redraw the table under the open form without closing it or losing the input.
    await page.wait_for_timeout(2500)
    assert await page.is_visible("#alarm-action")
    assert await page.input_value("#alarm-action-comment") == "compressor 2 starting"

    # A second try goes through; Esc closes a form first, then the panel.
    await page.click("#alarm-action-submit")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    await page.click(f"#alarms-table button[data-action=comment][data-alarm='{AIR}']")
    await page.keyboard.press("Escape")
    assert not await page.is_visible("#alarm-action")
    assert await page.is_visible("#alarms-panel")
    await page.keyboard.press("Escape")
    assert not await page.is_visible("#alarms-panel")
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_unshelve_and_comment_post_their_bodies(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    until = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30))
    api = FakeAlarmApi([_alarm(PUMP, "shelved", "low", "Pump 2 tripped", shelved_until=until)])
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await _name_operator(page, "Wang Fang")

    await page.click(f"#alarms-table button[data-action=unshelve][data-alarm='{PUMP}']")
    assert not await page.is_visible("#alarm-action-duration")
    await page.click("#alarm-action-submit")  # the comment is optional
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted == [("unshelve", {"alarm": PUMP, "user": "Wang Fang", "comment": ""})]

    # A comment needs its text; Ctrl+Enter sends it.
    await page.click(f"#alarms-table button[data-action=comment][data-alarm='{PUMP}']")
    await page.click("#alarm-action-submit")
    assert "comment" in (await page.text_content("#alarm-action-error") or "").lower()
    assert len(api.posted) == 1
    await page.fill("#alarm-action-comment", "fitter on site\nexpects 20 min")
    await page.press("#alarm-action-comment", "Control+Enter")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted[1] == (
        "comment",
        {"alarm": PUMP, "user": "Wang Fang", "comment": "fitter on site\nexpects 20 min"},
    )
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


def _journal_entries() -> list[dict[str, Any]]:
    """1,005 entries in order of writing, as the API pages them (oldest first)."""
    entries = []
    for seq in range(1, 1001):
        alarm = OIL if seq % 2 else AIR
        entries.append(_entry(seq, alarm, "condition", "shelved", "shelved", value=float(seq)))
    entries += [
        _entry(1001, VIB, "activated", "normal", "unacknowledged", value=7.4),
        _entry(
            1002,
            VIB,
            "acknowledged",
            "unacknowledged",
            "acknowledged",
            user="Li Wei",
            comment="bearing checked",
            value=7.4,
        ),
        _entry(
            1003,
            AIR,
            "commented",
            "acknowledged",
            "acknowledged",
            user="Zhang Min",
            comment="compressor 2 starting",
        ),
        _entry(1004, VIB, "cleared", "acknowledged", "normal", value=6.2),
        _entry(
            1005,
            PUMP,
            "shelved",
            "unacknowledged",
            "shelved",
            user="Wang Fang",
            comment="sensor being replaced",
        ),
    ]
    return entries


async def test_journal_lists_entries_newest_first_and_filters(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=900)
    api = FakeAlarmApi([_alarm(VIB, "acknowledged", "critical", "Vibration 7.4 mm/s above 7.1")])
    api.journal = _journal_entries()
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await page.click("#alarm-tab-journal")
    await wait_for(
        page,
        "() => document.querySelectorAll('#journal-table tr.journal-entry').length === 100",
        None,
        "the journal did not list its first 100 entries",
    )
    # The newest page first (500 entries, 100 drawn); older pages only on request.
    assert [
        (q.get("before_seq"), q.get("order"), q.get("limit"), q.get("start"))
        for q in api.journal_queries
    ] == [(None, "desc", "500", "-8h")]
    rows = await page.evaluate(JOURNAL_ROWS_JS)
    assert [r["seq"] for r in rows[:5]] == [1005, 1004, 1003, 1002, 1001]
    newest = rows[0]
    assert (newest["alarm"], newest["event"], newest["state"]) == (
        PUMP,
        "Shelved",
        "Unacknowledged → Shelved",
    )
    assert (newest["user"], newest["comment"]) == ("Wang Fang", "sensor being replaced")
    ack = rows[3]
    assert (ack["event"], ack["value"], ack["user"], ack["comment"]) == (
        "Acknowledged",
        "7.40",
        "Li Wei",
        "bearing checked",
    )
    assert rows[5]["state"] == "Shelved", "an unchanged state is named once"
    expected_time = await page.evaluate(
        "(iso) => new Date(iso).toLocaleString('en', {hour12: false})", api.journal[-1]["time"]
    )
    assert newest["time"] == expected_time
    assert await page.text_content("#journal-status") == (
        "The newest 500 entries; older ones load as you ask for them"
    )
    await page.click("#journal-more")
    assert len(await page.evaluate(JOURNAL_ROWS_JS)) == 200
    await page.screenshot(path=str(ARTIFACTS / "alarms-journal-1280x900.png"))

    # Filter by alarm (offered in the list) and a longer range.
    names = await page.eval_on_selector_all(
        "#journal-alarm-names option", "(os) => os.map((o) => o.value)"
    )
    assert set(names) == {VIB, AIR, OIL, PUMP}
    api.journal_queries.clear()
    await page.fill("#journal-alarm", VIB)
    await page.select_option("#journal-range", "-24h")  # a preset asks at once
    await wait_for(
        page,
        "() => document.querySelectorAll('#journal-table tr.journal-entry').length === 3",
        None,
        "the journal was not filtered to the vibration alarm",
    )
    assert api.journal_queries[-1] == {
        "alarm": VIB,
        "start": "-24h",
        "order": "desc",
        "limit": "500",
    }
    rows = await page.evaluate(JOURNAL_ROWS_JS)
    assert [(r["seq"], r["event"]) for r in rows] == [
        (1004, "Cleared"),
        (1002, "Acknowledged"),
        (1001, "Activated"),
    ]
    assert await page.is_hidden("#journal-more")

    # A custom range is sent as UTC instants; a reversed one is refused before asking.
    await page.select_option("#journal-range", "custom")
    await page.fill("#journal-from", "2026-11-29T06:00:00")
    await page.fill("#journal-to", "2026-11-29T05:00:00")
    count = len(api.journal_queries)
    await page.click("#journal-filter button[type=submit]")
    assert await page.text_content("#journal-status") == "The end must be after the start."
    assert len(api.journal_queries) == count
    await page.fill("#journal-to", "2026-11-29T07:30:00")
    await page.click("#journal-filter button[type=submit]")
    await wait_for(
        page,
        "(n) => document.getElementById('journal-status').textContent.includes('entries')",
        None,
        "the custom range was not loaded",
    )
    start, end = await page.evaluate(
        "() => [new Date('2026-11-29T06:00:00').toISOString(),"
        " new Date('2026-11-29T07:30:00').toISOString()]"
    )
    assert api.journal_queries[-1] == {
        "alarm": VIB,
        "start": start,
        "end": end,
        "order": "desc",
        "limit": "500",
    }

    # An error answer is shown, never swallowed.
    await page.route(
        JOURNAL,
        lambda route: route.fulfill(
            status=422,
            json={
                "error": {
                    "code": "invalid_parameter",
                    "field": "start",
                    "message": "start must look like ISO 8601 or -8h",
                }
            },
        ),
    )
    await page.click("#journal-filter button[type=submit]")
    await wait_for(
        page,
        "() => document.getElementById('journal-status').dataset.kind === 'error'",
        None,
        "a journal error was not shown",
    )
    assert await page.text_content("#journal-status") == (
        "Could not load the journal: 422: start must look like ISO 8601 or -8h"
    )
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_journal_pages_back_to_older_entries_on_request(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=900)
    api = FakeAlarmApi([_alarm(VIB, "acknowledged", "critical", "Vibration 7.4 mm/s above 7.1")])
    api.journal = _journal_entries()
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await page.click("#alarm-tab-journal")
    await wait_for(
        page,
        "() => document.querySelectorAll('#journal-table tr.journal-entry').length === 100",
        None,
        "the journal did not list its first 100 entries",
    )
    # Older entries are drawn 100 at a time; past the loaded 500, the next page is asked for.
    for _ in range(5):
        await page.click("#journal-more")
    await wait_for(
        page,
        "() => document.querySelectorAll('#journal-table tr.journal-entry').length === 600",
        None,
        "the next older page was not loaded",
    )
    assert [(q.get("before_seq"), q.get("limit")) for q in api.journal_queries[1:]] == [
        ("506", "500")
    ]
    rows = await page.evaluate(JOURNAL_ROWS_JS)
    assert [r["seq"] for r in rows[499:501]] == [506, 505]
    assert await page.text_content("#journal-status") == (
        "The newest 1000 entries; older ones load as you ask for them"
    )
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_an_alarm_name_opens_its_journal(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=800)
    api = FakeAlarmApi([_alarm(VIB, "acknowledged", "critical", "Vibration 7.4 mm/s above 7.1")])
    api.journal = _journal_entries()[-5:]
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await page.click(f"#alarms-table button[data-history='{VIB}']")
    await wait_for(
        page,
        "() => document.querySelectorAll('#journal-table tr.journal-entry').length === 3",
        None,
        "the alarm's name did not open its journal",
    )
    assert await page.get_attribute("#alarm-tab-journal", "aria-selected") == "true"
    assert await page.input_value("#journal-alarm") == VIB
    assert api.journal_queries == [{"alarm": VIB, "start": "-8h", "order": "desc", "limit": "500"}]
    assert {r["alarm"] for r in await page.evaluate(JOURNAL_ROWS_JS)} == {VIB}
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


KPIS_ANSWER: dict[str, Any] = {
    "start": "2026-11-28T07:00:00.000Z",
    "end": "2026-11-29T07:00:00.000Z",
    "activations": 412,
    "average_per_10min": 2.861111,
    "peak_per_10min": 37,
    "share_over_manageable": 0.125,
    "floods": [
        {"start": "2026-11-28T14:10:00.000Z", "end": "2026-11-28T14:30:00.000Z", "alarms": 52}
    ],
    "share_in_flood": 0.013889,
    "bad_actors": [
        {"alarm": OIL, "count": 160, "share": 0.388},
        {"alarm": VIB, "count": 90, "share": 0.218},
        {"alarm": AIR, "count": 12, "share": 0.029},
    ],
    "chattering": [{"alarm": OIL, "episodes": 14, "activations": 160}],
}


async def test_kpi_view_shows_the_figures_from_the_api_against_the_targets(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=900)
    api = FakeAlarmApi([_alarm(VIB, "acknowledged", "critical", "Vibration 7.4 mm/s above 7.1")])
    api.kpis = KPIS_ANSWER
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await page.click("#alarm-tab-kpis")
    await wait_for(
        page, "() => !document.getElementById('kpi-body').hidden", None, "no KPI figures"
    )
    assert api.kpi_queries == [{"start": "-24h"}]
    figures = await page.evaluate(KPI_FIGURES_JS)
    shown = {key: (f["value"], f["health"]) for key, f in figures.items()}
    assert shown == {
        "activations": ("412", None),
        "average": ("2.86", "bad"),  # above 2 per 10 minutes: not manageable
        "peak": ("37", "bad"),  # a flood
        "overManageable": ("12.5%", "warn"),
        "inFlood": ("1.4%", "bad"),  # EEMUA 191: below 1 %
        "chattering": ("1", "bad"),
    }
    assert figures["average"]["label"] == "Average per 10 minutes"
    actors = await page.eval_on_selector_all(
        "#kpi-bad-actors tbody tr",
        "(rs) => rs.map((r) => [r.dataset.alarm, r.cells[1].textContent, r.cells[2].textContent,"
        " r.querySelector('.kpi-bar').getBoundingClientRect().width])",
    )
    assert [a[:3] for a in actors] == [
        [OIL, "160", "38.8%"],
        [VIB, "90", "21.8%"],
        [AIR, "12", "2.9%"],
    ]
    assert actors[0][3] > actors[1][3] > actors[2][3], "bars follow the shares"
    floods = await page.eval_on_selector_all(
        "#kpi-floods tbody tr", "(rs) => rs.map((r) => r.cells[2].textContent)"
    )
    assert floods == ["52"]
    chatter = await page.eval_on_selector_all(
        "#kpi-chattering tbody tr", "(rs) => rs.map((r) => [...r.cells].map((c) => c.textContent))"
    )
    assert chatter == [[OIL, "14", "160"]]
    await page.screenshot(path=str(ARTIFACTS / "alarms-kpis-1280x900.png"))

    # A calm week: every figure within its target, the empty lists say so.
    api.kpis = {
        **KPIS_ANSWER,
        "activations": 0,
        "average_per_10min": 0.0,
        "peak_per_10min": 0,
        "share_over_manageable": 0.0,
        "floods": [],
        "share_in_flood": 0.0,
        "bad_actors": [],
        "chattering": [],
    }
    await page.select_option("#kpi-range", "-7d")
    await wait_for(
        page,
        "() => document.querySelector('#kpi-figures tr[data-kpi=peak]').dataset.health === 'ok'",
        None,
        "the week's figures were not shown",
    )
    assert api.kpi_queries[-1] == {"start": "-7d"}
    healths = {f["health"] for f in (await page.evaluate(KPI_FIGURES_JS)).values()}
    assert healths == {None, "ok"}
    assert await page.text_content("#kpi-floods tbody") == "No flood."
    assert await page.text_content("#kpi-bad-actors tbody") == "No alarm came in."
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_alarm_views_speak_simplified_chinese(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1280, height=900)
    api = FakeAlarmApi([_alarm(VIB, "unacknowledged", "critical", "振动 7.4 mm/s 超过 7.1")])
    api.journal = _journal_entries()[-5:]
    api.kpis = KPIS_ANSWER
    await api.install(page)
    await page.goto(demo_url + "/?lang=zh-CN")
    await _open_alarms(page, wait_for)
    tabs = await page.eval_on_selector_all("[role=tab]", "(ts) => ts.map((t) => t.textContent)")
    assert tabs == ["当前", "报警日志", "报警绩效"]
    await page.click(f"#alarms-table button[data-action=shelve][data-alarm='{VIB}']")
    assert await page.text_content("#alarm-action-duration-field span") == "搁置时长"
    assert await page.text_content("#alarm-action-comment-label") == "原因"
    await page.click("#alarm-action-cancel")

    await page.click("#alarm-tab-journal")
    await wait_for(
        page, "() => document.querySelector('#journal-table tr.journal-entry')", None, "no entry"
    )
    heads = await page.eval_on_selector_all(
        "#journal-table thead th", "(ts) => ts.map((t) => t.textContent)"
    )
    assert heads == ["时间", "报警", "事件", "状态", "数值", "用户", "备注"]
    events = [r["event"] for r in await page.evaluate(JOURNAL_ROWS_JS)]
    assert events == ["已搁置", "报警恢复", "备注", "已确认", "报警触发"]
    assert await page.text_content("#journal-status") == "5 条记录，最新的在前"

    await page.click("#alarm-tab-kpis")
    await wait_for(
        page, "() => !document.getElementById('kpi-body').hidden", None, "no KPI figures"
    )
    figures = await page.evaluate(KPI_FIGURES_JS)
    assert figures["average"]["label"] == "每 10 分钟平均"
    assert figures["inFlood"]["label"] == "处于报警泛滥的时间"
    assert await page.text_content(".kpi-heading") == "前 10 个高频报警"
    await page.screenshot(path=str(ARTIFACTS / "alarms-kpis-zh-CN-1280x900.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_journal_and_kpi_views_read_the_demo_itself(
    demo_url: str,
    demo_user: Provisioned,
    browser: Browser,
    wait_for: WaitFor,
    open_page: OpenPage,
) -> None:
    """No faked route: the page's queries and the real API's answers fit together."""
    async with httpx.AsyncClient(base_url=demo_url, timeout=5.0, headers=demo_user.headers) as http:
        every = (await http.get("/api/v1/alarms", params={"state": "all"})).json()
        assert every, "the demo runs alarm rules"
        name = every[0]["name"]
        note = f"browser test {dt.datetime.now(dt.UTC):%H:%M:%S.%f}"
        answer = await http.post(
            "/api/v1/alarms/comment", json={"alarm": name, "user": "tester", "comment": note}
        )
        assert answer.status_code == 200, answer.text

    page, errors = await open_page(browser, width=1280, height=900)
    await page.goto(demo_url + "/")
    await wait_for(
        page, "() => !document.getElementById('alarms-btn').hidden", None, "no alarm indicator"
    )
    await page.click("#alarms-btn")
    await page.click("#alarm-tab-journal")
    await page.fill("#journal-alarm", name)
    await page.click("#journal-filter button[type=submit]")
    await wait_for(
        page,
        "(note) => [...document.querySelectorAll('#journal-table td[data-col=comment]')]"
        ".some((c) => c.textContent === note)",
        note,
        "the comment written through the API is not in the journal view",
    )
    rows = await page.evaluate(JOURNAL_ROWS_JS)
    mine = next(r for r in rows if r["comment"] == note)
    assert (mine["alarm"], mine["event"], mine["user"]) == (name, "Comment", "tester")
    assert rows[0]["seq"] == max(r["seq"] for r in rows), "newest first"

    async with page.expect_response(lambda r: "/api/v1/alarms/kpis" in r.url) as answered:
        await page.click("#alarm-tab-kpis")
    kpis = await (await answered.value).json()
    await wait_for(
        page, "() => !document.getElementById('kpi-body').hidden", None, "no KPI figures"
    )
    figures = await page.evaluate(KPI_FIGURES_JS)
    # the figure the page shows is the real API's answer to the page's own query (an
    # answer read apart from it covers a sliding window and may differ by the edges)
    assert int(figures["activations"]["value"].replace(",", "")) == kpis["activations"]
    assert await page.get_attribute("#kpi-status", "data-kind") is None
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_a_logged_in_operator_acts_under_the_login_name(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    """The server takes the acting user from the login and refuses any other name, so the
    panel shows the login's name, read-only, and sends that."""
    page, errors = await open_page(browser, width=1280, height=800)
    api = FakeAlarmApi([_alarm(VIB, "unacknowledged", "critical", "Vibration 7.4", value=7.4)])
    api.me = {"name": "Li Wei", "role": "operator"}
    await api.install(page)
    await page.goto(demo_url + "/")
    await _open_alarms(page, wait_for)
    await wait_for(
        page,
        "() => document.getElementById('alarms-operator').value === 'Li Wei'",
        None,
        "the login's name was not shown",
    )
    assert await page.get_attribute("#alarms-operator", "readonly") is not None
    await page.click(f"#alarms-table button[data-action=acknowledge][data-alarm='{VIB}']")
    await page.click("#alarm-action-submit")
    await wait_for(
        page, "() => document.getElementById('alarm-action').hidden", None, "the form stayed"
    )
    assert api.posted == [("acknowledge", {"alarm": VIB, "user": "Li Wei", "comment": ""})]
    assert errors == []
