"""Sends alarm notifications: routing, a bounded queue per channel, rate limits, retries
with backoff, escalation, and every attempt journaled.

The dispatcher follows :attr:`AlarmEngine.events` (transitions already journaled), so a
message is only ever about something on record. Each channel has its own bounded queue
(drop-oldest, counted and logged once) and its own sender task: a dead mail server
never delays a DingTalk robot. A failed send is tried again after 1, 2, 4 … s (with
jitter, at most 60 s) up to ``attempts`` times; a robot's rate limit (20 a minute for
DingTalk) is kept by spacing messages. An alarm still unacknowledged ``escalate_after``
its activation is sent, marked as an escalation, to ``escalate_to`` as well.

The alarms come from an :class:`AlarmSource`: the process's alarm engine, or, scaled out,
an ingest worker's partition owners (:mod:`shopfloor.server.worker_alarms`). There the
escalations are kept in PostgreSQL by the owners (``durable_escalations``): a partition
moving to another worker takes its pending escalations with it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from shopfloor.config.notify import ChannelConfig, NotifySection, RouteConfig
from shopfloor.errors import ConfigError
from shopfloor.runtime.channels import Channel, Subscription
from shopfloor.runtime.clock import Clock, SystemClock
from shopfloor.server.rules.alarms import AlarmEvent, AlarmState, Transition
from shopfloor.server.rules.journal import SendAttempt
from shopfloor.server.rules.notify.messages import (
    Notice,
    http_request,
    robot_error,
    text_of,
)
from shopfloor.server.rules.rule import AlarmRule

__all__ = ["AlarmSource", "Dispatcher", "SendFailed", "escalations_of", "send_email"]

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000


class SendFailed(Exception):  # noqa: N818 - reads as what happened
    """One try to send failed; the message says why."""


class AlarmSource(Protocol):
    """What the dispatcher follows: journaled transitions, the rules, the states shown."""

    @property
    def events(self) -> Channel[Transition]:
        """Every journaled transition, in order."""

    def rule(self, name: str) -> AlarmRule | None:
        """The rule of an alarm, by name."""

    def state_of(self, name: str) -> AlarmState | None:
        """The state an alarm shows now."""

    async def log_attempt(self, attempt: SendAttempt) -> None:
        """Journal one try to send a notification."""


def escalations_of(
    routes: Sequence[RouteConfig], transition: Transition, rule: AlarmRule
) -> list[tuple[int, str]]:
    """When and to which channel ``transition`` is escalated if still unacknowledged then:
    (due ns, channel) per route that escalates it (none but for activations)."""
    if transition.event is not AlarmEvent.ACTIVATED:
        return []
    out = []
    for route in routes:
        after = route.escalate_after_s
        if after is None or not route.escalate_to:
            continue
        if _matches(route, transition, rule.priority, rule.tag):
            out.append((transition.ts_ns + int(after * 1e9), route.escalate_to))
    return out


@dataclass
class _Channel:
    config: ChannelConfig
    queue: asyncio.Queue[Notice] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: int = 0
    delivering: bool = False
    sent: int = 0
    failed: int = 0
    next_free: float = 0.0


class Dispatcher:
    """Notifications of ``engine``'s alarms as ``section`` routes them.

    Args:
        engine: the alarm engine (started) or another source; its events are followed,
            its journal logs.
        section: channels and routes.
        clock: wall time (escalations) and sleeping (retries, rate limits).
        http: the HTTP client (tests hand in their own); made here by default.
        backoff_s: the first retry's delay; doubled each time, at most 60 s.
        durable_escalations: the source keeps the pending escalations itself (partition
            owners, in PostgreSQL) and hands the due ones to :meth:`escalate`; none are
            kept here.
    """

    def __init__(
        self,
        engine: AlarmSource,
        section: NotifySection,
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        backoff_s: float = 1.0,
        durable_escalations: bool = False,
    ) -> None:
        self._engine = engine
        self._routes = section.routes
        self._channels = {c.name: _Channel(c) for c in section.channels}
        self._clock = clock or SystemClock()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=10.0)
        self._backoff_s = backoff_s
        self._escalations: list[tuple[int, int, str, Notice]] = []
        self._order = 0
        self._durable_escalations = durable_escalations
        self._followed: Subscription[Transition] | None = None

    def status(self) -> dict[str, dict[str, int]]:
        """Per channel: sent, failed (gave up), dropped (queue full), waiting."""
        return {
            name: {
                "sent": c.sent,
                "failed": c.failed,
                "dropped": c.dropped,
                "waiting": c.queue.qsize(),
            }
            for name, c in self._channels.items()
        }

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every message queued is sent or given up, at most ``timeout_s`` (a
        graceful stop); True if none is left."""
        if self._followed is not None:  # the events not routed yet, in order
            for transition in self._followed.drain():
                self.route(transition)
        deadline = self._clock.monotonic() + timeout_s
        while any(c.delivering or not c.queue.empty() for c in self._channels.values()):
            if self._clock.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def run(self) -> None:
        """Follow the engine's events and send until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for name, channel in self._channels.items():
                    tasks.create_task(self._send_loop(channel), name=f"notify/{name}")
                if not self._durable_escalations:
                    tasks.create_task(self._escalation_loop(), name="notify/escalations")
                async with self._engine.events.subscribe("notify") as events:
                    self._followed = events
                    async for transition in events:
                        self.route(transition)
        finally:
            if self._own_http:
                await self._http.aclose()

    # ------------------------------------------------------------------ routing
    def route(self, transition: Transition) -> None:
        """Queue ``transition`` for every channel a route sends it to."""
        rule = self._engine.rule(transition.alarm)
        if rule is None:
            return
        notice = Notice(transition, rule)
        for route in self._routes:
            if _matches(route, transition, rule.priority, rule.tag):
                self._offer(route.channel, notice)
        if self._durable_escalations:
            return
        for due, target in escalations_of(self._routes, transition, rule):
            self._order += 1
            heapq.heappush(self._escalations, (due, self._order, target, notice))

    def escalate(self, transition: Transition, target: str) -> None:
        """Send ``transition`` (an activation still unacknowledged) to ``target`` as an
        escalation: for a source keeping its escalations itself."""
        rule = self._engine.rule(transition.alarm)
        if rule is not None and target in self._channels:
            self._offer(target, Notice(transition, rule, escalation=True))

    def _offer(self, name: str, notice: Notice) -> None:
        channel = self._channels[name]
        if channel.queue.full():
            channel.queue.get_nowait()
            channel.dropped += 1
            if channel.dropped == 1:
                logger.warning("notify channel %s is behind: dropping the oldest messages", name)
        channel.queue.put_nowait(notice)

    async def _escalation_loop(self) -> None:
        while True:
            await self._clock.sleep(1.0)
            now = self._clock.now_ns()
            while self._escalations and self._escalations[0][0] <= now:
                _, _, target, notice = heapq.heappop(self._escalations)
                if self._engine.state_of(notice.transition.alarm) is AlarmState.UNACKNOWLEDGED:
                    self._offer(target, Notice(notice.transition, notice.rule, escalation=True))

    # ------------------------------------------------------------------ sending
    async def _send_loop(self, channel: _Channel) -> None:
        spacing = 60.0 / channel.config.rate_per_minute
        while True:
            notice = await channel.queue.get()
            wait = channel.next_free - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            channel.next_free = self._clock.monotonic() + spacing
            channel.delivering = True
            try:
                await self._deliver(channel, notice)
            finally:
                channel.delivering = False

    async def _deliver(self, channel: _Channel, notice: Notice) -> None:
        config = channel.config
        delay = self._backoff_s
        event = ("escalation:" if notice.escalation else "") + notice.transition.event.value
        for attempt in range(1, config.attempts + 1):
            try:
                await self._send(config, notice)
            except (SendFailed, ConfigError) as err:
                await self._log(notice, config.name, event, attempt, ok=False, detail=str(err))
                if attempt == config.attempts or isinstance(err, ConfigError):
                    channel.failed += 1
                    logger.error(
                        "notify %s: gave up on %s after %d tries: %s",
                        config.name,
                        notice.transition.alarm,
                        attempt,
                        err,
                    )
                    return
                await self._clock.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 60.0)
                continue
            await self._log(notice, config.name, event, attempt, ok=True, detail="sent")
            channel.sent += 1
            return

    async def _log(
        self, notice: Notice, channel: str, event: str, attempt: int, *, ok: bool, detail: str
    ) -> None:
        await self._engine.log_attempt(
            SendAttempt(
                self._clock.now_ns(),
                notice.transition.alarm,
                event,
                channel,
                attempt,
                ok,
                detail[:500],
            )
        )

    async def _send(self, config: ChannelConfig, notice: Notice) -> None:
        if config.kind == "email":
            await asyncio.to_thread(_send_email, config, notice)
            return
        url, body = http_request(
            config.kind,
            config.resolved_url(),
            notice,
            secret=config.secret(),
            now_ms=self._clock.now_ns() // 1_000_000,
        )
        await post_checked(self._http, config.kind, url, body)


async def post_checked(http: httpx.AsyncClient, kind: str, url: str, body: Any) -> None:
    """POST ``body`` to a robot or webhook and check the answer (a robot answers 200 with
    its own error code).

    Raises:
        SendFailed: the request failed, or the answer is an error.
    """
    try:
        answer = await http.post(url, json=body)
    except httpx.HTTPError as err:
        raise SendFailed(f"{type(err).__name__}: {err}") from err
    if answer.status_code >= 300:
        raise SendFailed(f"HTTP {answer.status_code}: {answer.text[:200]}")
    if kind != "webhook":
        try:
            parsed: Any = answer.json()
        except ValueError as err:
            raise SendFailed(f"not JSON: {answer.text[:200]}") from err
        problem = robot_error(kind, parsed)
        if problem is not None:
            raise SendFailed(problem)


def _matches(route: RouteConfig, t: Transition, priority: str, tag: str) -> bool:
    if t.event.value not in route.events or priority not in route.priorities:
        return False
    return not route.prefixes or any(
        tag == p or tag.startswith(p.rstrip("/") + "/") for p in route.prefixes
    )


def _send_email(config: ChannelConfig, notice: Notice) -> None:
    """Send one alarm e-mail (blocking: runs in a thread)."""
    first_line = text_of(notice).split("\n", 1)[0]
    send_email(config, subject=f"shopfloor {first_line}", body=text_of(notice))


def send_email(
    config: ChannelConfig,
    *,
    subject: str,
    body: str,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> None:
    """Send one e-mail over ``config``'s SMTP server (blocking: run it in a thread).

    Args:
        config: an email channel.
        subject: the subject (cut at 200 characters).
        body: the plain-text body.
        attachments: (file name, MIME type, content) of each attached file (reports).

    Raises:
        SendFailed: the server refused or could not be reached.
        ConfigError: the password's environment variable is unset.
    """
    message = EmailMessage()
    message["From"] = config.sender or ""
    message["To"] = ", ".join(config.recipients)
    message["Subject"] = subject[:200]
    message.set_content(body)
    for filename, mime, content in attachments:
        maintype, _, subtype = mime.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    context = ssl.create_default_context(
        cafile=str(config.ca_file) if config.ca_file is not None else None
    )
    host = config.smtp_host or ""
    try:
        smtp: smtplib.SMTP
        if config.tls == "ssl":
            smtp = smtplib.SMTP_SSL(host, config.smtp_port, timeout=15, context=context)
        else:
            smtp = smtplib.SMTP(host, config.smtp_port, timeout=15)
        with smtp:
            if config.tls == "starttls":
                smtp.starttls(context=context)
            password = config.password()
            if config.username and password is not None:
                smtp.login(config.username, password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as err:
        raise SendFailed(f"SMTP {host}:{config.smtp_port}: {err}") from err
