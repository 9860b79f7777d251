"""Alarm notifications against a real HTTP receiver and a real SMTP server (aiosmtpd).

The receiver checks each robot's documented request for itself: body shape, and the
DingTalk and Feishu signatures recomputed from the shared secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.config.notify import NotifySection
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.server.rules.engine import AlarmEngine, AlarmRule
from shopfloor.server.rules.journal import AlarmJournal
from shopfloor.server.rules.notify.dispatcher import Dispatcher
from shopfloor.testing.clock import ManualClock

from .conftest import Mailbox, Receiver

S = 10**9
OIL = "acme/p1/press/l1/c1/press-1/oil_temp"
AIR = "acme/p1/utilities/air/compressors/comp-1/pressure"
SECRET = "SEC0123456789abcdef"


def rules() -> list[AlarmRule]:
    return [
        AlarmRule("oil.HH", OIL, "HH", limit=95.0, priority="critical", message="oil {value}"),
        AlarmRule("air.L", AIR, "L", limit=6.0, priority="low", message="air {value}"),
    ]


def live(tag: str, ts: int, value: float) -> LiveBatch:
    return LiveBatch(PointBatch.from_columns([tag], np.zeros(1), np.array([ts]), np.array([value])))


async def until(
    what: str, probe: Any, timeout_s: float = 15.0, clock: ManualClock | None = None
) -> None:
    """Wait for ``probe``; a manual clock moves on 20 ms a turn (rate-limit spacing)."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        if clock is not None:
            clock.advance(0.02)
        await asyncio.sleep(0.02)


def section(receiver: Receiver, smtp_port: int, ca: Path) -> NotifySection:
    return NotifySection.model_validate(
        {
            "channels": [
                {
                    "name": "ding",
                    "kind": "dingtalk",
                    "url": f"{receiver.url}/dingtalk?access_token=t",
                    "secret_env": "TEST_DING_SECRET",
                },
                {"name": "wecom", "kind": "wecom", "url": f"{receiver.url}/wecom?key=k"},
                {
                    "name": "feishu",
                    "kind": "feishu",
                    "url": f"{receiver.url}/feishu",
                    "secret_env": "TEST_DING_SECRET",
                },
                {"name": "hook", "kind": "webhook", "url": f"{receiver.url}/hook"},
                {
                    "name": "mail",
                    "kind": "email",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "tls": "starttls",
                    "ca_file": str(ca),
                    "sender": "shopfloor@plant.local",
                    "recipients": ["lead@plant.local"],
                },
            ],
            "routes": [
                {"channel": "ding", "priorities": ["critical", "high"]},
                {"channel": "wecom", "prefixes": ["acme/p1/utilities"]},
                {"channel": "feishu", "priorities": ["critical"]},
                {"channel": "hook", "events": ["activated", "cleared", "acknowledged"]},
                {"channel": "mail", "priorities": ["critical"]},
            ],
        }
    )


async def test_each_channel_gets_its_documented_request_by_route(
    tmp_path: Path,
    receiver: Receiver,
    smtp: tuple[Mailbox, int, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_DING_SECRET", SECRET)
    mailbox, smtp_port, ca = smtp
    engine = AlarmEngine(rules(), tmp_path / "alarms.sqlite")
    await engine.start()
    receiver.fail_first = {"dingtalk": 1, "hook": 2}  # they recover: retried with backoff
    dispatcher = Dispatcher(engine, section(receiver, smtp_port, ca), backoff_s=0.05)
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.1)
        t0 = time.time_ns()
        await engine.process(live(OIL, t0, 97.5))  # critical, press area
        await engine.process(live(AIR, t0, 5.2))  # low, utilities
        await engine.acknowledge("oil.HH", user="li", comment="on it")
        await until(
            "every message",
            lambda: (
                len(mailbox.messages) == 1
                and len(receiver.got.get("hook", [])) == 5
                and len(receiver.got.get("dingtalk", [])) == 2
            ),
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
    # DingTalk: the critical alarm only, signed; the first try got errcode and was retried
    ding = receiver.got["dingtalk"]
    assert all(d["body"]["msgtype"] == "text" for d in ding)
    assert "oil 97.5" in ding[-1]["body"]["text"]["content"]
    stamp = ding[-1]["query"]["timestamp"]
    want = base64.b64encode(
        hmac.new(SECRET.encode(), f"{stamp}\n{SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    assert ding[-1]["query"]["sign"] == want
    assert abs(int(stamp) - t0 // 10**6) < 60_000  # milliseconds
    # WeCom: utilities only (the low-priority air alarm)
    (wecom,) = receiver.got["wecom"]
    assert wecom["body"]["msgtype"] == "text"
    assert "air 5.2" in wecom["body"]["text"]["content"]
    # Feishu: signed in the body, seconds
    (feishu,) = receiver.got["feishu"]
    body = feishu["body"]
    assert (body["msg_type"], "oil 97.5" in body["content"]["text"]) == ("text", True)
    key = f"{body['timestamp']}\n{SECRET}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    # webhook: every event of both alarms, as JSON documents (two tries failed first)
    docs = [h["body"] for h in receiver.got["hook"][2:]]
    assert sorted((d["alarm"], d["event"]) for d in docs) == [
        ("air.L", "activated"),
        ("oil.HH", "acknowledged"),
        ("oil.HH", "activated"),
    ]
    ack = next(d for d in docs if d["event"] == "acknowledged")
    assert (ack["user"], ack["comment"], ack["priority"]) == ("li", "on it", "critical")
    # e-mail over STARTTLS, verified against the test CA
    mail = message_from_bytes(mailbox.messages[0], policy=policy.default)
    assert mail["To"] == "lead@plant.local"
    assert "oil 97.5" in mail["Subject"]
    # every attempt journaled, failures included
    journal = AlarmJournal(tmp_path / "alarms.sqlite")
    attempts = journal.attempts(alarm="oil.HH")
    journal.close()
    hook = [(a.attempt, a.ok) for a in attempts if a.channel == "hook" and a.event == "activated"]
    assert hook == [(1, False), (2, False), (3, True)]
    assert dispatcher.status()["ding"]["sent"] == 1


async def test_an_unacknowledged_alarm_escalates_once_an_acknowledged_one_not(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock(time.time_ns())
    engine = AlarmEngine(rules(), tmp_path / "alarms.sqlite", clock=clock)
    await engine.start()
    config = NotifySection.model_validate(
        {
            "channels": [
                {
                    "name": "first",
                    "kind": "webhook",
                    "url": f"{receiver.url}/first",
                    "rate_per_minute": 6000,
                },
                {
                    "name": "boss",
                    "kind": "webhook",
                    "url": f"{receiver.url}/boss",
                    "rate_per_minute": 6000,
                },
            ],
            "routes": [{"channel": "first", "escalate_after": "15m", "escalate_to": "boss"}],
        }
    )
    dispatcher = Dispatcher(engine, config, clock=clock)
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.1)
        t0 = clock.now_ns()
        await engine.process(live(OIL, t0, 99.0))
        await engine.process(live(AIR, t0, 5.0))
        await until(
            "two first messages", lambda: len(receiver.got.get("first", [])) == 2, clock=clock
        )
        await engine.acknowledge("air.L", user="wang")
        for _ in range(16 * 60):  # a quarter of an hour and a minute, second by second
            clock.advance(1.0)
            await asyncio.sleep(0)
        await until("the escalation", lambda: len(receiver.got.get("boss", [])) == 1, clock=clock)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.close()
    (boss,) = receiver.got["boss"]
    assert (boss["body"]["alarm"], boss["body"]["escalation"]) == ("oil.HH", True)
