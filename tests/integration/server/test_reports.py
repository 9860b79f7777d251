"""Reports through the real server: demo plant assets, a DuckDB historian, the HTTP API,
and a scheduled day report sent through a real SMTP server (aiosmtpd, STARTTLS) with
both files attached, read back with openpyxl and pypdf."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pypdf
import pytest

from shopfloor.config import ShopfloorConfig
from shopfloor.config.notify import ChannelConfig
from shopfloor.config.reports import ReportSchedule
from shopfloor.model import PointBatch, now_ns
from shopfloor.model.timefmt import format_ns
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.app import Server
from shopfloor.server.reports.gather import gather
from shopfloor.server.reports.period import period_of
from shopfloor.server.reports.schedule import ReportScheduler
from shopfloor.testing.auth import grant
from shopfloor.testing.clock import ManualClock
from shopfloor.testing.serving import serving

from .conftest import Mailbox, Receiver

S = 10**9
M = 60 * S
H = 3600 * S
DAY = 24 * H
DEMO = Path(str(resources.files("shopfloor") / "demo_plant"))
MILL = "acme/plant-1/machining/line-1/cell-1/cnc-01"
T0 = (now_ns() // DAY - 2) * DAY + 6 * H  # 06:00 UTC the day before yesterday
DATE = datetime.fromtimestamp(T0 / S, UTC).date()


def at(hh: int, mm: int = 0) -> int:
    return T0 + (hh - 6) * H + mm * M


def scenario() -> PointBatch:
    """cnc-01's worked shift: a 30 min breakdown, a setup across the break, a micro-stop;
    300 parts, 290 good, 10 scrap (the OEE API test's scenario)."""
    state = [(6, 0, 1), (7, 0, 4), (7, 30, 1), (9, 50, 3), (10, 40, 1), (12, 0, 2), (12, 1, 1)]
    reason = [(6, 0, 0), (7, 0, 4), (7, 30, 0), (9, 50, 7), (10, 40, 0), (12, 0, 3), (12, 1, 0)]
    rows: list[tuple[str, int, Any, int]] = []
    rows += [(f"{MILL}/state", at(h, m), v, 0) for h, m, v in state]
    rows += [(f"{MILL}/down_reason", at(h, m), v, 0) for h, m, v in reason]
    rows += [(f"{MILL}/state", T0 - H, 1, 0), (f"{MILL}/down_reason", T0 - H, 0, 0)]
    for name, before, after in (
        ("part_count", 1000, 1300),
        ("good_count", 900, 1190),
        ("scrap_count", 100, 110),
    ):
        rows += [(f"{MILL}/{name}", T0 - M, before, 0), (f"{MILL}/{name}", at(13, 59), after, 0)]
    rows += [(f"{MILL}/state", at(20), 1, 0)]
    return PointBatch.from_points(rows)


@asynccontextmanager
async def platform(
    data_dir: Path, smtp_port: int, ca: Path
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    config = ShopfloorConfig.model_validate(
        {
            "server": {"port": 0, "data_dir": str(data_dir)},
            "historian": {"flush_interval_s": 0.05},
            "assets": {"plant": str(DEMO / "plant.toml")},
            "notify": {
                "channels": [
                    {
                        "name": "leads",
                        "kind": "email",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": smtp_port,
                        "ca_file": str(ca),
                        "sender": "shopfloor@plant.test",
                        "recipients": ["lead@plant.test"],
                    }
                ]
            },
            "analytics": {
                "shifts": {
                    "shifts": [{"name": "day", "start": "06:00", "end": "14:00"}],
                    "breaks": [{"start": "10:00", "end": "10:30"}],
                },
                "oee": {"enabled": False},
                "spc": [
                    {
                        "name": "bore",
                        "tag": f"{MILL}/spindle_temp",
                        "kind": "imr",
                        "usl": 90.0,
                    }
                ],
            },
        }
    ).resolve_paths(data_dir)
    async with serving(Server(config)) as server:
        await server.ingest_local(scenario())
        await server.historian.flush()
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, headers=grant(server.app)
        ) as client:
            yield server, client


async def get_json(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    r = await client.get(url, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_reports_equal_the_api_and_read_back(
    tmp_path: Path, smtp: tuple[Mailbox, int, Path]
) -> None:
    _, port, ca = smtp
    async with platform(tmp_path, port, ca) as (server, client):
        assert server.analytics is not None
        period = period_of(server.analytics.calendar, "day", DATE)
        report = await gather(
            server.app.state.shopfloor, period, charts=server.config.analytics.spc
        )
        span = {"start": format_ns(period.start_ns), "end": format_ns(period.end_ns)}
        # one computation path: the report holds exactly what the routes answer
        assert report.answers["oee"]["plant"] == await get_json(client, "/api/v1/oee", **span)
        assert report.answers["oee"]["machine:cnc-01"] == await get_json(
            client, "/api/v1/oee", equipment="cnc-01", **span
        )
        assert report.answers["oee"]["line:line-1"] == await get_json(
            client, "/api/v1/oee", line="line-1", **span
        )
        for by in ("reason", "equipment"):
            assert report.answers[f"pareto_{by}"] == await get_json(
                client, "/api/v1/downtime/pareto", by=by, **span
            )
        assert report.answers["alarms"] == await get_json(client, "/api/v1/alarms/kpis", **span)
        assert server.energy is not None  # the demo plant's machines have energy tags
        assert report.answers["energy"]["plant"] == await get_json(client, "/api/v1/energy", **span)
        assert report.notes == []  # every section is there
        mill = report.answers["oee"]["machine:cnc-01"]["rows"][0]
        assert mill["good"] == 290
        top = report.answers["pareto_reason"]["rows"][0]

        # XLSX read back: sheets, headers with units, numbers as numbers, frozen headers
        r = await client.get("/api/v1/reports/day", params={"date": DATE.isoformat()})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
        stem = f"shopfloor-day-{DATE.isoformat()}"
        assert f'filename="{stem}.xlsx"' in r.headers["content-disposition"]
        book = openpyxl.load_workbook(io.BytesIO(r.content))
        assert book.sheetnames[:5] == ["Report", "OEE", "Pareto reason", "Pareto machine", "Alarms"]
        assert book.sheetnames[5:] == ["Bad actors", "Energy", "SPC"]
        oee = book["OEE"]
        headers = [c.value for c in oee[1]]
        assert headers[:6] == [
            "Level",
            "Name",
            "Availability [%]",
            "Performance [%]",
            "Quality [%]",
            "OEE [%]",
        ]
        assert "Breakdowns [min]" in headers
        assert oee.freeze_panes == "A2"
        rows = {row[1]: row for row in oee.iter_rows(min_row=2, values_only=True)}
        assert rows["cnc-01"][0] == "machine"
        assert rows["cnc-01"][5] == pytest.approx(mill["oee"])
        assert rows["cnc-01"][headers.index("Good [pcs]")] == 290
        assert rows["cnc-01"][headers.index("Breakdowns [min]")] == pytest.approx(
            mill["losses"]["breakdowns_s"] / 60
        )
        pareto = list(book["Pareto reason"].iter_rows(min_row=2, values_only=True))
        assert pareto[0][0] == top["key"]
        assert pareto[0][3] == pytest.approx(top["downtime_s"] / 60)

        # PDF: parses, names the period and the machines
        r = await client.get(
            "/api/v1/reports/day", params={"date": DATE.isoformat(), "format": "pdf"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf"
        assert f'filename="{stem}.pdf"' in r.headers["content-disposition"]
        text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(r.content)).pages)
        assert f"day report {DATE.isoformat()}" in text
        assert "cnc-01" in text
        assert "line-1" in text


async def test_shift_and_week_reports_are_named_by_their_period(
    tmp_path: Path, smtp: tuple[Mailbox, int, Path]
) -> None:
    _, port, ca = smtp
    async with platform(tmp_path, port, ca) as (_, client):
        r = await client.get(
            "/api/v1/reports/shift", params={"date": DATE.isoformat(), "shift": "day"}
        )
        assert r.status_code == 200, r.text
        assert f"shopfloor-shift-{DATE.isoformat()}-day.xlsx" in r.headers["content-disposition"]
        week = DATE.isocalendar()
        r = await client.get(
            "/api/v1/reports/week",
            params={"date": f"{week.year}-W{week.week:02d}", "format": "pdf"},
        )
        assert r.status_code == 200, r.text
        assert (
            f"shopfloor-week-{week.year}-W{week.week:02d}.pdf" in (r.headers["content-disposition"])
        )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("day", {"date": "27.11.2026"}, "date"),
        ("day", {"date": "2026-02-30"}, "date"),
        ("shift", {"date": "2026-11-27"}, "shift"),
        ("shift", {"date": "2026-11-27", "shift": "night"}, "shift"),
        ("day", {"date": "2026-11-27", "shift": "day"}, "shift"),
        ("day", {"date": "2026-11-27", "format": "docx"}, "format"),
        ("month", {"date": "2026-11-27"}, "kind"),
    ],
)
async def test_a_bad_parameter_gives_422_naming_it(
    tmp_path: Path, smtp: tuple[Mailbox, int, Path], path: str, params: dict[str, str], field: str
) -> None:
    _, port, ca = smtp
    async with platform(tmp_path, port, ca) as (_, client):
        r = await client.get(f"/api/v1/reports/{path}", params=params)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field


def check_mail(raw: bytes) -> None:
    """The day report's e-mail: subject, summary body, both files that read back."""
    mail = message_from_bytes(raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == f"shopfloor day report {DATE.isoformat()}"
    files = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    stem = f"shopfloor-day-{DATE.isoformat()}"
    assert set(files) == {f"{stem}.xlsx", f"{stem}.pdf"}
    book = openpyxl.load_workbook(io.BytesIO(files[f"{stem}.xlsx"]))
    names = [row[1] for row in book["OEE"].iter_rows(min_row=2, values_only=True)]
    assert "cnc-01" in names
    text = pypdf.PdfReader(io.BytesIO(files[f"{stem}.pdf"])).pages[0].extract_text()
    assert DATE.isoformat() in text
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    assert "OEE" in body.get_content()


async def test_the_schedule_mails_the_day_report_with_both_files(
    tmp_path: Path, smtp: tuple[Mailbox, int, Path], receiver: Receiver
) -> None:
    box, port, ca = smtp
    async with platform(tmp_path, port, ca) as (server, _):
        assert server.analytics is not None
        calendar = ShiftCalendar(server.config.analytics.shifts)
        # 06:00 the day after the scenario: the day report is due at 06:30
        clock = ManualClock(T0 + DAY)
        robots = [  # a real HTTP receiver, as the alarm notifications are tested
            ChannelConfig(name="robot", kind="dingtalk", url=f"{receiver.url}/dingtalk"),
            ChannelConfig(name="hook", kind="webhook", url=f"{receiver.url}/webhook"),
        ]
        http = httpx.AsyncClient(timeout=10)
        scheduler = ReportScheduler(
            [ReportSchedule(kind="day", channels=["leads", "robot", "hook"], at="06:30")],
            server.app.state.shopfloor,
            calendar=calendar,
            channels=[*server.config.notify.channels, *robots],
            log_attempt=server.alarms.log_attempt,
            charts=server.config.analytics.spc,
            clock=clock,
            http=http,
        )
        task = asyncio.create_task(scheduler.run(), name="test/reports")
        try:
            await asyncio.sleep(0.05)
            clock.advance(20 * 60)  # 06:20: not yet
            await asyncio.sleep(0.2)
            assert box.messages == []
            clock.advance(11 * 60)  # 06:31
            async with asyncio.timeout(60):
                while scheduler.sent < 3:  # noqa: ASYNC110 - the scheduler's counter
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await http.aclose()
        # robots and webhooks cannot carry files: a short text summary
        (robot,) = [r["body"] for r in receiver.got["dingtalk"]]
        (hook,) = [r["body"] for r in receiver.got["webhook"]]
        assert robot["msgtype"] == "text"
        assert robot["text"]["content"].startswith(f"shopfloor day report {DATE.isoformat()}")
        assert "OEE" in robot["text"]["content"]
        assert "Top loss" in robot["text"]["content"]
        assert hook["report"] == "day"
        assert hook["period"] == DATE.isoformat()
        check_mail(box.messages[0])
        attempts = await server.alarms.attempts(alarm=f"report:day:{DATE.isoformat()}")
        assert sorted((a.channel, a.event, a.ok) for a in attempts) == [
            ("hook", "report", True),
            ("leads", "report", True),
            ("robot", "report", True),
        ]
        assert len(box.messages) == 1
