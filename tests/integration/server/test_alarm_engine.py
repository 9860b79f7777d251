"""The alarm engine over live batches, with a real journal file and time moved by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model import LiveBatch, PointBatch, Quality
from shopfloor.server.rules.alarms import AlarmState
from shopfloor.server.rules.engine import AlarmEngine, AlarmRule
from shopfloor.testing.clock import ManualClock

S = 10**9
OIL = "acme/p1/press/l1/c1/press-1/oil_temp"
LINK = "acme/p1/press/l1/c1/press-1/plc_ok"
RULES = [
    AlarmRule("oil.HH", OIL, "HH", limit=95.0, priority="critical"),
    AlarmRule(
        "oil.H",
        OIL,
        "H",
        limit=80.0,
        deadband=2.0,
        on_delay_s=5.0,
        message="oil {value:.1f} above {limit}",
    ),
    AlarmRule("plc.bad", LINK, "bad_quality", priority="high"),
]


def live(points: list[tuple[str, int, float, int]], *, historical: bool = False) -> LiveBatch:
    tags = [p[0] for p in points]
    names = list(dict.fromkeys(tags))
    batch = PointBatch.from_columns(
        names,
        np.array([names.index(t) for t in tags]),
        np.array([p[1] for p in points], np.int64),
        np.array([p[2] for p in points], np.float64),
        np.array([p[3] for p in points], np.uint32),
    )
    return LiveBatch(batch, historical=historical)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_limits_delays_and_bad_quality_raise_journaled_alarms(
    tmp_path: Path, clock: ManualClock
) -> None:
    engine = AlarmEngine(RULES, tmp_path / "alarms.sqlite", clock=clock)
    await engine.start()
    t0 = clock.now_ns()
    try:
        async with engine.events.subscribe("test") as events:
            came = await engine.process(live([(OIL, t0, 85.0, 0), (OIL, t0 + S, 97.0, 0)]))
            assert [(t.alarm, t.after) for t in came] == [("oil.HH", AlarmState.UNACKNOWLEDGED)]
            clock.advance(6)  # oil.H's on-delay ran out with no new point
            (late,) = await engine.tick()
            assert (late.alarm, late.ts_ns, late.value) == ("oil.H", t0 + 5 * S, 85.0)
            bad = int(Quality.BAD_COMMUNICATION_ERROR)
            (plc,) = await engine.process(live([(LINK, t0 + 7 * S, 0.0, bad)]))
            assert plc.alarm == "plc.bad"
            assert [t.alarm for t in events.drain()] == ["oil.HH", "oil.H", "plc.bad"]
        shown = {a.rule.name: a for a in engine.alarms(active_only=True)}
        assert sorted(shown) == ["oil.H", "oil.HH", "plc.bad"]
        assert engine.rule("oil.H") is not None
        rule = engine.rule("oil.H")
        assert rule is not None  # the value that brought it in, in its message
        assert rule.text(shown["oil.H"].value) == "oil 85.0 above 80.0"
        ack = await engine.acknowledge("oil.HH", user="li", comment="cooling on")
        assert ack.after is AlarmState.ACKNOWLEDGED
        with pytest.raises(PayloadError, match="nothing to acknowledge"):
            await engine.acknowledge("oil.HH", user="li")
        with pytest.raises(UnknownTagError, match="no alarm named 'nope'"):
            await engine.acknowledge("nope", user="li")
        # inside the deadband oil.H stays; below it both clear
        assert await engine.process(live([(OIL, t0 + 8 * S, 79.0, 0)])) != []  # HH clears
        assert engine.alarms()[1].state is AlarmState.UNACKNOWLEDGED
        cleared = await engine.process(live([(OIL, t0 + 9 * S, 77.0, 0)]))
        assert [(t.alarm, t.after) for t in cleared] == [
            ("oil.H", AlarmState.RETURNED_UNACKNOWLEDGED)
        ]
    finally:
        await engine.close()


async def test_historical_batches_raise_nothing(tmp_path: Path, clock: ManualClock) -> None:
    engine = AlarmEngine(RULES, tmp_path / "alarms.sqlite", clock=clock)
    await engine.start()
    try:
        t0 = clock.now_ns() - 3600 * S
        assert await engine.process(live([(OIL, t0, 99.0, 0)], historical=True)) == []
        assert engine.alarms(active_only=True) == []
        assert engine.historical_skipped == 1
    finally:
        await engine.close()


async def test_a_restart_continues_from_the_journal_without_re_alarming(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "alarms.sqlite"
    engine = AlarmEngine(RULES, path, clock=clock)
    await engine.start()
    t0 = clock.now_ns()
    await engine.process(live([(OIL, t0, 99.0, 0)]))
    await engine.acknowledge("oil.HH", user="li")
    await engine.shelve("oil.H", until_ns=t0 + 3600 * S, user="wang", comment="probe swap")
    await engine.close()

    again = AlarmEngine(RULES, path, clock=clock)
    await again.start()
    try:
        states = {a.rule.name: a.state for a in again.alarms()}
        assert states == {
            "oil.HH": AlarmState.ACKNOWLEDGED,
            "oil.H": AlarmState.SHELVED,
            "plc.bad": AlarmState.NORMAL,
        }
        # the condition is remembered: a still-high value is not a new alarm
        assert await again.process(live([(OIL, t0 + 2 * S, 99.5, 0)])) == []
        entries = await again.journal(alarm="oil.H")  # its on-delay had not run out
        assert [(e.event.value, e.user, e.comment) for e in entries] == [
            ("shelved", "wang", "probe swap"),
        ]
    finally:
        await again.close()


async def test_deviation_follows_its_setpoint_and_rate_of_change_its_slope(
    tmp_path: Path, clock: ManualClock
) -> None:
    sp = "acme/p1/press/l1/c1/press-1/oil_setpoint"
    rules = [
        AlarmRule("oil.dev", OIL, "deviation", limit=5.0, deadband=1.0, setpoint=sp),
        AlarmRule("oil.roc", OIL, "roc", limit=2.0),  # more than 2 K a second
    ]
    engine = AlarmEngine(rules, tmp_path / "alarms.sqlite", clock=clock)
    await engine.start()
    t0 = clock.now_ns()
    try:
        # setpoint 60; oil 63 is inside the band; the setpoint drops to 55: now 8 away
        steps = await engine.process(live([(sp, t0, 60.0, 0), (OIL, t0 + S, 63.0, 0)]))
        assert steps == []
        moved = await engine.process(live([(sp, t0 + 2 * S, 55.0, 0), (OIL, t0 + 3 * S, 63.0, 0)]))
        assert [(t.alarm, t.ts_ns) for t in moved] == [("oil.dev", t0 + 3 * S)]
        # 63 -> 70 in one second: 7 K/s; then 70.5 a second later: 0.5 K/s, and 59 is back
        # within 5 of 55 less the deadband
        fast = await engine.process(live([(OIL, t0 + 4 * S, 70.0, 0), (OIL, t0 + 5 * S, 70.5, 0)]))
        assert [(t.alarm, t.after.value) for t in fast] == [
            ("oil.roc", "unacknowledged"),
            ("oil.roc", "returned_unacknowledged"),
        ]
        back = await engine.process(live([(OIL, t0 + 6 * S, 58.9, 0)]))
        assert ("oil.dev", "returned_unacknowledged") in [(t.alarm, t.after.value) for t in back]
    finally:
        await engine.close()


async def test_an_expression_over_two_tags_and_its_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    state = "acme/p1/press/l1/c1/press-1/state"
    rule = AlarmRule(
        "hot.running",
        OIL,
        "expression",
        expression="oil > 80 and state == 1",
        inputs=(("oil", OIL), ("state", state)),
    )
    path = tmp_path / "alarms.sqlite"
    engine = AlarmEngine([rule, *RULES[:1]], path, clock=clock)
    await engine.start()
    t0 = clock.now_ns()
    try:
        # hot while stopped: no alarm; running: alarm; stopped again: it clears
        assert await engine.process(live([(OIL, t0, 85.0, 0), (state, t0, 2.0, 0)])) == []
        came = await engine.process(live([(state, t0 + S, 1.0, 0)]))
        assert [(t.alarm, t.after.value, t.ts_ns) for t in came] == [
            ("hot.running", "unacknowledged", t0 + S)
        ]
    finally:
        await engine.close()
    again = AlarmEngine([rule, *RULES[:1]], path, clock=clock)
    await again.start()
    try:  # after a restart the standing condition is no new alarm, and while an input
        # has no value yet (state) nothing is decided
        assert await again.process(live([(OIL, t0 + 2 * S, 86.0, 0)])) == []
        gone = await again.process(live([(state, t0 + 3 * S, 2.0, 0)]))
        assert [(t.alarm, t.after.value) for t in gone] == [
            ("hot.running", "returned_unacknowledged")
        ]
    finally:
        await again.close()


async def test_replacing_the_rules_keeps_standing_alarms_and_stops_removed_ones(
    tmp_path: Path, clock: ManualClock
) -> None:
    engine = AlarmEngine(RULES, tmp_path / "alarms.sqlite", clock=clock)
    await engine.start()
    t0 = clock.now_ns()
    try:
        await engine.process(live([(OIL, t0, 97.0, 0), (LINK, t0, 1.0, Quality.BAD)]))
        assert engine.state_of("oil.HH") is AlarmState.UNACKNOWLEDGED
        await engine.acknowledge("plc.bad", user="ada")
        gas = "acme/p1/press/l1/c1/press-1/gas"
        await engine.replace_rules([RULES[0], AlarmRule("gas.H", gas, "H", limit=5.0)])
        # kept: its state (and it needs no new activation); removed: gone; new: normal
        assert engine.state_of("oil.HH") is AlarmState.UNACKNOWLEDGED
        assert engine.state_of("plc.bad") is None
        assert engine.state_of("gas.H") is AlarmState.NORMAL
        assert [a.rule.name for a in engine.alarms()] == ["oil.HH", "gas.H"]
        with pytest.raises(UnknownTagError):
            await engine.acknowledge("plc.bad", user="ada")
        came = await engine.process(
            live([(OIL, t0 + S, 98.0, 0), (gas, t0 + S, 6.0, 0), (LINK, t0 + S, 0, 0)])
        )
        assert [t.alarm for t in came] == ["gas.H"]  # no re-alarm of the kept HH
        # a rule that comes back starts where the journal left it (as after a restart)
        await engine.replace_rules(RULES)
        assert engine.state_of("plc.bad") is AlarmState.ACKNOWLEDGED
        assert [e.alarm for e in await engine.journal(alarm="plc.bad")] == ["plc.bad"] * 2
    finally:
        await engine.close()
