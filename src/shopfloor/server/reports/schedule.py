"""Scheduled reports: each ``[[analytics.reports]]`` entry gathered, rendered and sent
through its notification channels when its period has ended.

One task (``server/reports``, owned by the Server) runs every entry: it sleeps until the
earliest due time on the injected clock, then gathers the report (the API's own
functions), renders the files in a thread and sends them. E-mail channels get the files
as attachments; chat robots and webhooks cannot carry files, so they get a short text
summary (plant OEE, the top loss, energy) — a webhook as a small JSON document. Every try
is journaled like an alarm notification (the notifications table, alarm
``report:<kind>:<label>``, event ``report``), retried with backoff up to the channel's
``attempts``.

Only periods ending after the task started are sent: a server down over 06:30 does not
send yesterday's report when it comes back (ask ``GET /api/v1/reports/day`` instead).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from shopfloor.config.analytics import parse_time_of_day
from shopfloor.config.notify import ChannelConfig
from shopfloor.config.reports import WEEKDAYS, ReportSchedule
from shopfloor.config.spc import SpcChartConfig
from shopfloor.errors import ConfigError
from shopfloor.model.timefmt import format_ns
from shopfloor.runtime.clock import Clock
from shopfloor.server.analytics.shifts import ShiftCalendar
from shopfloor.server.api.context import ApiContext
from shopfloor.server.reports import pdf, xlsx
from shopfloor.server.reports.gather import Report, gather
from shopfloor.server.reports.period import Period, period_of
from shopfloor.server.rules.journal import SendAttempt
from shopfloor.server.rules.notify.dispatcher import SendFailed, post_checked, send_email
from shopfloor.server.rules.notify.messages import text_request

__all__ = ["ReportScheduler", "next_due", "render"]

logger = logging.getLogger(__name__)

_NS = 10**9
_MAX_SLEEP_S = 60.0  # wake now and then: the wall clock may be set while we sleep


def _ns(moment: datetime) -> int:
    return round(moment.timestamp()) * _NS


def next_due(entry: ReportSchedule, calendar: ShiftCalendar, after_ns: int) -> tuple[int, Period]:
    """When ``entry`` is next sent after ``after_ns`` (exclusive), and for which period."""
    zone = calendar.zone
    today = datetime.fromtimestamp(after_ns / _NS, zone).date()
    at = parse_time_of_day(entry.at)

    def moment(day: date) -> int:
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        return _ns(midnight + timedelta(minutes=at))

    if entry.kind == "day":
        for offset in range(3):
            send_day = today + timedelta(days=offset)
            due = moment(send_day)
            if due > after_ns:
                return due, period_of(calendar, "day", send_day - timedelta(days=1))
    elif entry.kind == "week":
        wanted = WEEKDAYS.index(entry.weekday)
        for offset in range(15):
            send_day = today + timedelta(days=offset)
            due = moment(send_day)
            if send_day.weekday() == wanted and due > after_ns:
                last_week = send_day - timedelta(days=send_day.weekday() + 1)
                return due, period_of(calendar, "week", last_week)
    else:
        settle = round(entry.settle_s * _NS)
        lo = after_ns - settle - 2 * 86_400 * _NS
        shifts = calendar.instances(lo, after_ns + 3 * 86_400 * _NS)
        for i, s, e in zip(shifts.shift, shifts.start, shifts.end, strict=True):
            if int(e) + settle > after_ns:
                day = datetime.fromtimestamp(int(s) / _NS, zone).date()
                return int(e) + settle, period_of(
                    calendar, "shift", day, shift=calendar.names[int(i)]
                )
        raise ConfigError("analytics.reports: shift reports need [analytics.shifts] shifts")
    raise AssertionError("unreachable: a due time is always found")  # pragma: no cover


def render(report: Report, fmt: str) -> tuple[str, str, bytes]:
    """(file name, MIME type, content) of ``report`` as ``fmt`` (CPU work: call in a
    thread)."""
    if fmt == "xlsx":
        return f"{report.period.stem}.xlsx", xlsx.CONTENT_TYPE, xlsx.render_xlsx(report)
    return f"{report.period.stem}.pdf", pdf.CONTENT_TYPE, pdf.render_pdf(report)


@dataclass
class _Due:
    due_ns: int
    period: Period
    entry: ReportSchedule


class ReportScheduler:
    """Sends ``entries`` on their schedules.

    Args:
        entries: the ``[[analytics.reports]]`` entries.
        context: the API's context (services the report is gathered from).
        calendar: the plant's shift calendar (periods and due times).
        channels: the notification channels, by name.
        log_attempt: where each try is journaled (``AlarmEngine.log_attempt``).
        charts: the configured control charts.
        clock: wall time and sleeping (tests move a manual clock).
        http: the HTTP client for robots and webhooks (made here by default).
        backoff_s: the first retry's delay, doubled each time, at most 60 s.
    """

    def __init__(
        self,
        entries: Sequence[ReportSchedule],
        context: ApiContext,
        *,
        calendar: ShiftCalendar,
        channels: Sequence[ChannelConfig],
        log_attempt: Callable[[SendAttempt], Awaitable[None]],
        charts: Sequence[SpcChartConfig] = (),
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        backoff_s: float = 1.0,
    ) -> None:
        self._entries = list(entries)
        self._ctx = context
        self._calendar = calendar
        self._channels = {c.name: c for c in channels}
        for i, entry in enumerate(self._entries):
            for name in entry.channels:
                if name not in self._channels:
                    raise ConfigError(f"analytics.reports[{i}].channels: no channel {name!r}")
        self._log_attempt = log_attempt
        self._charts = list(charts)
        self._clock = clock
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=15.0)
        self._backoff_s = backoff_s
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        """Send every entry's reports as they fall due, until cancelled."""
        try:
            start = self._clock.now_ns()
            plan = [_Due(*next_due(e, self._calendar, start), e) for e in self._entries]
            while plan:
                plan.sort(key=lambda d: d.due_ns)
                first = plan[0]
                wait = (first.due_ns - self._clock.now_ns()) / _NS
                if wait > 0:
                    await self._clock.sleep(min(wait, _MAX_SLEEP_S))
                    continue
                try:
                    await self.send(first.entry, first.period)
                except Exception:
                    # one report failing (a historian error, a bug) must not end the schedule
                    self.failed += 1
                    logger.exception(
                        "the %s report %s failed", first.period.kind, first.period.label
                    )
                first.due_ns, first.period = next_due(first.entry, self._calendar, first.due_ns)
        finally:
            if self._own_http:
                await self._http.aclose()

    async def send(self, entry: ReportSchedule, period: Period) -> None:
        """Gather, render and send one report to every channel of ``entry``."""
        logger.info("sending the %s report %s", period.kind, period.label)
        report = await gather(self._ctx, period, charts=self._charts)
        files = [await asyncio.to_thread(render, report, fmt) for fmt in entry.formats]
        for name in entry.channels:
            await self._deliver(self._channels[name], report, files)

    async def _deliver(
        self, channel: ChannelConfig, report: Report, files: list[tuple[str, str, bytes]]
    ) -> None:
        period = report.period
        subject = f"report:{period.kind}:{period.label}"
        delay = self._backoff_s
        for attempt in range(1, channel.attempts + 1):
            try:
                await self._send(channel, report, files)
            except (SendFailed, ConfigError) as err:
                await self._journal(subject, channel.name, attempt, ok=False, detail=str(err))
                if attempt == channel.attempts or isinstance(err, ConfigError):
                    self.failed += 1
                    logger.error("report %s to %s: gave up: %s", subject, channel.name, err)
                    return
                await self._clock.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 60.0)
                continue
            names = ", ".join(f[0] for f in files) if channel.kind == "email" else "summary"
            await self._journal(subject, channel.name, attempt, ok=True, detail=f"sent {names}")
            self.sent += 1
            return

    async def _journal(
        self, subject: str, channel: str, attempt: int, *, ok: bool, detail: str
    ) -> None:
        await self._log_attempt(
            SendAttempt(self._clock.now_ns(), subject, "report", channel, attempt, ok, detail[:500])
        )

    async def _send(
        self, channel: ChannelConfig, report: Report, files: list[tuple[str, str, bytes]]
    ) -> None:
        period = report.period
        text = report.summary()
        if channel.kind == "email":
            body = (
                f"{text}\n\nFrom {format_ns(period.start_ns)} until "
                f"{format_ns(period.end_ns)} ({period.zone}); the files are attached."
            )
            subject = f"shopfloor {period.kind} report {period.label}"
            await asyncio.to_thread(
                send_email, channel, subject=subject, body=body, attachments=files
            )
            return
        if channel.kind == "webhook":
            url = channel.resolved_url()
            doc: dict[str, Any] = {
                "report": period.kind,
                "period": period.label,
                "start": format_ns(period.start_ns),
                "end": format_ns(period.end_ns),
                "text": text,
            }
            body_json: dict[str, Any] = doc
        else:
            url, body_json = text_request(
                channel.kind,
                channel.resolved_url(),
                text,
                secret=channel.secret(),
                now_ms=self._clock.now_ns() // 1_000_000,
            )
        await post_checked(self._http, channel.kind, url, body_json)
