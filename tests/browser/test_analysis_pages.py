"""The OEE and downtime page and the trend explorer in a real headless Chromium against the
demo (the simulator back-fills yesterday at 5x, so history grows from 24 h ago).

Every figure is compared with the API's answer to the page's own request; the reason an
operator assigns is read back through the API; the explorer's CSV and Parquet downloads
are compared with the points its chart holds. Screenshots go to ``test-artifacts/`` (the
conftest's ARTIFACTS folder, git-ignored).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.async_api import Browser, Page, Response

from shopfloor.testing.auth import Provisioned

if TYPE_CHECKING:  # fixtures' types only: test modules are imported by path
    from tests.browser.conftest import OpenPage, WaitFor


HEADERS: dict[str, str] = {}
"""The demo's API token (of the logged-in user ``tester``), for this module's own requests."""


@pytest.fixture(autouse=True)
def _demo_token(demo_user: Provisioned) -> None:
    HEADERS.update(demo_user.headers)


pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 20_000
LINE = "acme/plant-1/machining/line-1"
CNC = f"{LINE}/cell-1/cnc-01"
TEMP = f"{CNC}/spindle_temp"
LOAD = f"{CNC}/load_pct"

PERCENT_JS = """(v) => v === null ? "–" : new Intl.NumberFormat("en", {
  style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(v)"""

CHART_JS = """(id) => {
  const chart = window.echarts.getInstanceByDom(document.getElementById(id));
  if (!chart) return null;
  const option = chart.getOption();
  return {
    series: option.series.map((s) => ({ id: s.id, yAxisIndex: s.yAxisIndex, data: s.data })),
    yAxis: option.yAxis.map((a) => a.name),
  };
}"""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def oee_url(demo_url: str, **extra: str) -> str:
    """The OEE page of line 1, grouped by shift, over the back-filled history: from before
    its first point to the newest one (the demo replays yesterday, so "now" would add a
    day of a held last state)."""
    first = await _first_point_ms(demo_url, TEMP)
    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS) as client:
        latest = (await client.get("/api/v1/values/latest")).json()["values"]
    newest = max(datetime.fromisoformat(v["ts"].replace("Z", "+00:00")) for v in latest)
    query = {
        "scope": f"line:{LINE}",
        "group": "shift",
        "from": iso(datetime.fromtimestamp(first / 1000, UTC) - timedelta(minutes=10)),
        "to": iso(newest + timedelta(seconds=1)),
        **extra,
    }
    return f"{demo_url}/oee?{urlencode(query)}"


async def open_oee(page: Page, url: str, wait_for: WaitFor) -> dict[str, Any]:
    """Open the OEE page; return the API answers it read, by what they were."""
    answers: dict[str, Response] = {}

    def keep(response: Response) -> None:
        path = urlsplit(response.url).path
        query = parse_qs(urlsplit(response.url).query)
        if path == "/api/v1/oee":
            answers["total" if query.get("group") == ["none"] else "grouped"] = response
        elif path == "/api/v1/downtime/pareto":
            answers["pareto"] = response
        elif path == "/api/v1/downtime":
            answers["stops"] = response

    page.on("response", keep)
    await page.goto(url)
    await wait_for(page, "() => document.body.dataset.loaded", None, "the OEE page did not load")
    page.remove_listener("response", keep)
    assert set(answers) == {"total", "grouped", "pareto", "stops"}, sorted(answers)
    return {key: await r.json() for key, r in answers.items()}


async def test_oee_page_shows_the_api_answer_to_its_own_query(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    await _machine_with_a_stop(demo_url)  # some history to show
    page, errors = await open_page(browser, width=1440, height=1700)
    url = await oee_url(demo_url)
    answers = await open_oee(page, url, wait_for)
    total = answers["total"]["rows"][0]
    assert total["planned_s"] > 0, "the demo's line 1 had no planned time in the back-fill"
    assert answers["total"]["equipment"] == ["cnc-01", "cnc-02", "cnc-03"]

    for key in ("oee", "availability", "performance", "quality"):
        dd = page.locator(f'#oee-figures [data-figure="{key}"] dd')
        value = await dd.get_attribute("data-value")
        assert (float(value) if value else None) == total[key], key
        assert await dd.text_content() == await page.evaluate(PERCENT_JS, total[key]), key
    losses = await page.eval_on_selector_all(
        "#oee-losses tbody tr", "(rs) => rs.map((r) => [r.dataset.loss, Number(r.dataset.seconds)])"
    )
    assert dict(losses) == total["losses"]

    grouped = answers["grouped"]["rows"]
    assert grouped, "no shift in the back-filled day"
    shown = await page.eval_on_selector_all(
        "#oee-groups tbody tr", "(rs) => rs.map((r) => [r.dataset.start, r.cells[1].textContent])"
    )
    assert shown == [[r["start"], await page.evaluate(PERCENT_JS, r["oee"])] for r in grouped]

    pareto = [r for r in answers["pareto"]["rows"] if r["downtime_s"] > 0]
    chart = await page.evaluate(CHART_JS, "pareto-chart")
    bars = {s["id"]: s["data"] for s in chart["series"]}
    assert bars["downtime"] == pytest.approx([r["downtime_s"] / 3600 for r in pareto])
    assert bars["cumulative"] == pytest.approx([r["cumulative_share"] * 100 for r in pareto])

    # Bars by machine: the chart follows the answer to the page's new request.
    async with page.expect_response(
        lambda r: "/api/v1/downtime/pareto" in r.url and "by=equipment" in r.url, timeout=WAIT_MS
    ) as by_machine:
        await page.select_option("#pareto-by", "equipment")
    by_rows = (await (await by_machine.value).json())["rows"]
    machines = [r["key"] for r in by_rows if r["downtime_s"] > 0]
    await wait_for(
        page,
        """(keys) => {
          const chart = window.echarts.getInstanceByDom(document.getElementById("pareto-chart"));
          return JSON.stringify(chart.getOption().xAxis[0].data) === JSON.stringify(keys);
        }""",
        machines,
        f"the Pareto did not show the machines {machines}",
    )
    assert parse_qs(urlsplit(page.url).query)["by"] == ["equipment"]

    events = answers["stops"]["events"]
    rows = await page.eval_on_selector_all(
        "#stops-table tbody tr[data-equipment]",
        "(rs) => rs.map((r) => [r.dataset.equipment, r.dataset.start])",
    )
    assert sorted(rows) == sorted([e["equipment"], e["start"]] for e in events)
    assert {e["equipment"] for e in events} <= {"cnc-01", "cnc-02", "cnc-03", "conv-01"}

    # The query is in the URL: the same address shows the same view.
    assert parse_qs(urlsplit(page.url).query)["scope"] == [f"line:{LINE}"]
    await page.screenshot(path=str(ARTIFACTS / "oee-page-1440x1700.png"))

    # A conveyor has stops but no OEE (no part counter): the page says so and lists its stops.
    conveyor = f"{LINE}/transport/conv-01"
    async with page.expect_response(
        lambda r: "/api/v1/downtime?" in r.url and "conv-01" in r.url, timeout=WAIT_MS
    ) as conveyor_stops:
        await page.select_option("#oee-scope", f"equipment:{conveyor}")  # applies at once
    conveyor_events = (await (await conveyor_stops.value).json())["events"]
    await wait_for(
        page,
        "() => document.getElementById('oee-formula').textContent.startsWith('No machine here')",
        None,
        "a scope without OEE did not say so",
    )
    assert await page.text_content('#oee-figures [data-figure="oee"] dd') == "–"
    listed = await page.eval_on_selector_all(
        "#stops-table tbody tr[data-equipment]", "(rs) => rs.map((r) => r.dataset.equipment)"
    )
    # whatever stops the conveyor had (the demo's conveyor may run through the window: time
    # before its first state is no stop), the page lists exactly the API's
    assert listed == ["conv-01"] * len(conveyor_events)
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_an_operator_assigns_a_stop_reason_that_the_api_then_reports(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    machine = await _machine_with_a_stop(demo_url)
    page, errors = await open_page(browser, width=1440, height=1100)
    url = await oee_url(demo_url, scope=f"equipment:{machine['path']}")
    answers = await open_oee(page, url, wait_for)
    assignable = [e for e in answers["stops"]["events"] if e["start_known"]]
    assert assignable, f"{machine['id']} had no stop with a known start"
    event = assignable[0]
    reason = "4" if event["reason"] != 4 else "6"
    select = page.locator(f'#stops-table tr[data-start="{event["start"]}"] select[data-reason]')

    # The operator is the login (the server refuses any other name): shown, read-only.
    await wait_for(
        page,
        "() => document.getElementById('stops-operator').readOnly",
        None,
        "the operator field did not take the login's name",
    )
    assert await page.input_value("#stops-operator") == "tester"  # the logged-in user
    await page.fill("#stops-comment", "breaker tripped")
    async with page.expect_response(
        lambda r: r.request.method == "PUT" and "/api/v1/downtime/" in r.url, timeout=WAIT_MS
    ) as put:
        await select.select_option(reason)
    assert (await put.value).status == 200, await (await put.value).text()
    await wait_for(
        page,
        "() => document.getElementById('stops-status').textContent.includes('electrical')"
        " || document.getElementById('stops-status').textContent.includes('mechanical')",
        None,
        "the page did not confirm the reason",
    )

    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS) as client:
        answer = await client.get(
            "/api/v1/downtime",
            params={"equipment": machine["id"], "start": answers["stops"]["start"], "end": "now"},
        )
    stored = answer.json()["events"]
    (mine,) = [e for e in stored if e["start_ns"] == event["start_ns"]]
    assert mine["reason"] == int(reason)
    assert mine["assigned"]["user"] == "tester"
    assert mine["assigned"]["comment"] == "breaker tripped"
    assert await page.input_value("#stops-comment") == "", "a comment goes with one reason"
    # The page read the list again: the row says who assigned it.
    await wait_for(
        page,
        f"""() => {{
          const row = document.querySelector('#stops-table tr[data-start="{event["start"]}"]');
          return row && /^tester, .* · breaker tripped$/.test(row.cells[6].textContent);
        }}""",
        None,
        "the stop list did not show who assigned the reason",
    )
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def _machine_with_a_stop(demo_url: str) -> dict[str, str]:
    """A machine of the demo that has had a stop since the back-fill began (the first
    ones come after a simulated minute or two, a few seconds after the demo starts)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS) as client:
        while True:
            answer = await client.get("/api/v1/downtime", params={"start": "-26h", "end": "now"})
            known = [e for e in answer.json()["events"] if e["start_known"]]
            if known:
                return {"id": known[0]["equipment"], "path": known[0]["path"]}
            assert time.monotonic() < deadline, "no stop in the demo's first 30 s"
            await asyncio.sleep(1.0)


async def _first_point_ms(demo_url: str, path: str) -> int:
    """The time of the oldest stored point of ``path`` (the start of the back-fill)."""
    deadline = time.monotonic() + 20
    params = {"tags": path, "from": "now-26h", "to": "now", "limit": 1, "time_format": "ms"}
    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS) as client:
        while True:
            rows = (await client.get("/api/v1/history", params=params)).json()
            if rows:
                return int(rows[0]["time"])
            assert time.monotonic() < deadline, f"no history of {path}"
            await asyncio.sleep(0.5)


async def _history_until(demo_url: str, path: str, ms: int) -> None:
    """Wait until ``path`` has a point at or after ``ms`` (the back-fill runs at 5x)."""
    deadline = time.monotonic() + 30
    params = {"tags": path, "from": str(ms), "to": "now", "limit": 1}
    async with httpx.AsyncClient(base_url=demo_url, headers=HEADERS) as client:
        while not (await client.get("/api/v1/history", params=params)).json():
            assert time.monotonic() < deadline, f"no history of {path} after {ms}"
            await asyncio.sleep(0.5)


def _csv_points(text: str, column: str) -> dict[str, list[tuple[int, float | None]]]:
    points: dict[str, list[tuple[int, float | None]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        ms = int(datetime.fromisoformat(row["time"].replace("Z", "+00:00")).timestamp() * 1000)
        value = float(row[column]) if row[column] else None
        points.setdefault(row["path"], []).append((ms, value))
    return points


def _parquet_points(table: pa.Table, column: str) -> dict[str, list[tuple[int, float | None]]]:
    points: dict[str, list[tuple[int, float | None]]] = {}
    ns = table.column("ts").cast(pa.int64()).to_pylist()
    for t, path, value in zip(
        ns, table.column("path").to_pylist(), table.column(column).to_pylist(), strict=True
    ):
        points.setdefault(path, []).append((t // 1_000_000, value))
    return points


async def _downloads(page: Page, folder: Path, column: str) -> list[dict[str, Any]]:
    """Click both export links; the points of the CSV and of the Parquet file, by tag."""
    async with page.expect_download() as csv_download:
        await page.click("#export-csv")
    csv_file = folder / "shown.csv"
    await (await csv_download.value).save_as(csv_file)
    async with page.expect_download() as parquet_download:
        await page.click("#export-parquet")
    parquet_file = folder / "shown.parquet"
    await (await parquet_download.value).save_as(parquet_file)
    return [
        _csv_points(csv_file.read_text(), column),
        _parquet_points(pq.read_table(parquet_file), column),
    ]


async def _chart_points(page: Page) -> dict[str, list[tuple[int, float | None]]]:
    chart = await page.evaluate(CHART_JS, "trends-chart")
    return {s["id"]: [(int(ts), v) for ts, v in s["data"]] for s in chart["series"]}


def _assert_same_points(
    shown: dict[str, list[tuple[int, float | None]]],
    downloaded: dict[str, list[tuple[int, float | None]]],
) -> None:
    assert list(downloaded) == list(shown)
    for path, points in shown.items():
        assert [ts for ts, _ in downloaded[path]] == [ts for ts, _ in points], path
        good = [
            (v, w) for (_, v), (_, w) in zip(points, downloaded[path], strict=True) if v is not None
        ]
        assert good, f"{path}: no value shown"
        assert [w for _, w in good] == pytest.approx([v for v, _ in good]), path


async def test_trend_explorer_overlays_two_tags_zooms_and_downloads_what_it_shows(
    demo_url: str,
    browser: Browser,
    wait_for: WaitFor,
    open_page: OpenPage,
    tmp_path: Path,
) -> None:
    # A window that ends inside stored history, so what it holds no longer changes: the
    # 30 minutes before the back-fill began and its first minute.
    first = await _first_point_ms(demo_url, TEMP)
    await _history_until(demo_url, TEMP, first + 70_000)
    start = datetime.fromtimestamp(first / 1000, UTC) - timedelta(minutes=30)
    end = start + timedelta(minutes=31)
    query = {"tag": [TEMP, LOAD], "from": iso(start), "to": iso(end)}
    page, errors = await open_page(browser, width=1440, height=900)
    await page.goto(f"{demo_url}/trends?{urlencode(query, doseq=True)}")
    await wait_for(page, "() => document.body.dataset.loaded", None, "the explorer drew nothing")

    chart = await page.evaluate(CHART_JS, "trends-chart")
    series = {s["id"]: s for s in chart["series"]}
    assert list(series) == [TEMP, LOAD]
    assert chart["yAxis"] == ["°C", "%"], "one value axis per unit"
    assert series[TEMP]["yAxisIndex"] == 0
    assert series[LOAD]["yAxisIndex"] == 1
    assert await page.is_checked(f'#picker-tree input[data-path="{TEMP}"]')
    assert "5s" in (await page.text_content("#trends-status") or ""), "31 min: 5 s averages"
    shown = await _chart_points(page)
    for downloaded in await _downloads(page, tmp_path, "avg"):
        _assert_same_points(shown, downloaded)
    await page.screenshot(path=str(ARTIFACTS / "trends-page-1440x900.png"))

    # Zooming into the last quarter shows those 7¾ minutes as raw points; the URL and the
    # downloads follow.
    loaded = await page.evaluate("() => document.body.dataset.loaded")
    async with page.expect_request(lambda r: "/api/v1/history" in r.url, timeout=WAIT_MS) as asked:
        await page.evaluate(
            """() => window.echarts.getInstanceByDom(document.getElementById("trends-chart"))
                 .dispatchAction({ type: "dataZoom", start: 75, end: 100 })"""
        )
    raw = parse_qs(urlsplit((await asked.value).url).query)
    assert "interval" not in raw, "a window under 15 minutes is drawn from raw points"
    await wait_for(
        page,
        "(before) => document.body.dataset.loaded !== before",
        loaded,
        "the zoomed window was not drawn",
    )
    zoomed = parse_qs(urlsplit(page.url).query)
    assert zoomed["tag"] == [TEMP, LOAD]
    assert zoomed["to"] == [iso(end)]
    assert datetime.fromisoformat(zoomed["from"][0]) == end - timedelta(minutes=7.75)
    shown = await _chart_points(page)
    for downloaded in await _downloads(page, tmp_path, "value"):
        _assert_same_points(shown, downloaded)
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"


async def test_analysis_pages_speak_simplified_chinese(
    demo_url: str, browser: Browser, wait_for: WaitFor, open_page: OpenPage
) -> None:
    page, errors = await open_page(browser, width=1440, height=1100)
    await open_oee(page, await oee_url(demo_url, lang="zh-CN"), wait_for)
    assert await page.text_content("h1") == "设备综合效率与停机"
    labels = await page.eval_on_selector_all(
        "#oee-figures dt", "(ds) => ds.map((d) => d.textContent)"
    )
    assert labels == ["OEE", "时间开动率", "性能开动率", "合格品率"]
    assert await page.text_content("#oee-losses caption") == "六大损失"
    assert await page.title() == "shopfloor · 设备综合效率与停机"
    await page.screenshot(path=str(ARTIFACTS / "oee-page-zh-CN-1440x1100.png"))

    first = await _first_point_ms(demo_url, TEMP)
    start = datetime.fromtimestamp(first / 1000, UTC)
    query = {"tag": TEMP, "from": iso(start), "to": iso(start + timedelta(minutes=2))}
    await page.goto(f"{demo_url}/trends?lang=zh-CN&{urlencode(query)}")
    await wait_for(page, "() => document.body.dataset.loaded", None, "the explorer drew nothing")
    assert await page.text_content("#trends-zoom-out") == "缩小"
    assert (await page.text_content("#trends-status") or "").endswith("原始值")
    assert "lang=zh-CN" in page.url, "the language stays in the shared address"
    await page.screenshot(path=str(ARTIFACTS / "trends-page-zh-CN-1440x900.png"))
    assert not errors, f"uncaught errors or CSP violations in the page: {errors}"
