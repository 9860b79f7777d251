"""The ISA-18.2 state machine, driven through every transition with time under control."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.errors import PayloadError
from shopfloor.server.rules.alarms import Alarm, AlarmEvent, AlarmState, Transition
from shopfloor.server.rules.journal import AlarmJournal

S = 10**9
A, B, C, D = (
    AlarmState.NORMAL,
    AlarmState.UNACKNOWLEDGED,
    AlarmState.ACKNOWLEDGED,
    AlarmState.RETURNED_UNACKNOWLEDGED,
)
F, G, H = AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE


def steps(transitions: list[Transition]) -> list[tuple[str, AlarmState, AlarmState, int]]:
    return [(t.event.value, t.before, t.after, t.ts_ns // S) for t in transitions]


def test_the_four_annunciation_states_and_their_six_transitions() -> None:
    alarm = Alarm("line1/press/oil_temp.H")
    assert alarm.state is A
    log = alarm.observe(True, 1 * S, 81.0)  # A -> B
    log += alarm.acknowledge(2 * S, user="li", comment="checking")  # B -> C
    log += alarm.observe(False, 3 * S, 70.0)  # C -> A
    log += alarm.observe(True, 4 * S, 82.0)  # A -> B
    log += alarm.observe(False, 5 * S, 71.0)  # B -> D
    log += alarm.observe(True, 6 * S, 83.0)  # D -> B: back before anybody acknowledged
    log += alarm.observe(False, 7 * S, 72.0)  # B -> D
    log += alarm.acknowledge(8 * S, user="li")  # D -> A
    assert steps(log) == [
        ("activated", A, B, 1),
        ("acknowledged", B, C, 2),
        ("cleared", C, A, 3),
        ("activated", A, B, 4),
        ("cleared", B, D, 5),
        ("activated", D, B, 6),
        ("cleared", B, D, 7),
        ("acknowledged", D, A, 8),
    ]
    assert (log[1].user, log[1].comment, log[0].value) == ("li", "checking", 81.0)


@pytest.mark.parametrize("state", ["normal", "acknowledged"])
def test_nothing_to_acknowledge_is_refused(state: str) -> None:
    alarm = Alarm("a")
    if state == "acknowledged":
        alarm.observe(True, S)
        alarm.acknowledge(2 * S, user="li")
    with pytest.raises(PayloadError, match=f"a is {state}: nothing to acknowledge"):
        alarm.acknowledge(3 * S, user="li")


def test_a_repeated_condition_changes_nothing() -> None:
    alarm = Alarm("a")
    assert len(alarm.observe(True, S)) == 1
    assert alarm.observe(True, 2 * S) == []
    assert alarm.state is B


def test_on_delay_a_blip_never_alarms_a_standing_condition_does() -> None:
    alarm = Alarm("a", on_delay_ns=10 * S)
    assert alarm.observe(True, 100 * S) == []
    assert alarm.observe(False, 105 * S) == []  # gone within the delay: nothing happened
    assert alarm.state is A
    assert alarm.observe(True, 200 * S) == []
    assert alarm.observe(True, 205 * S) == []  # still waiting; the delay does not restart
    assert alarm.tick(209 * S) == []
    (came,) = alarm.tick(211 * S)  # no point came: time alone brings it in
    assert steps([came]) == [("activated", A, B, 210)]  # at the end of the delay


def test_a_point_after_the_delay_brings_the_alarm_in_at_the_delays_end() -> None:
    alarm = Alarm("a", on_delay_ns=10 * S)
    alarm.observe(True, 100 * S, 90.0)
    log = alarm.observe(False, 130 * S, 50.0)  # held 30 s: it alarmed at 110, cleared at 130
    assert steps(log) == [("activated", A, B, 110), ("cleared", B, D, 130)]
    assert log[0].value == 90.0


def test_off_delay_keeps_a_chattering_alarm_in() -> None:
    alarm = Alarm("a", off_delay_ns=5 * S)
    alarm.observe(True, 0)
    for t in range(1, 10):  # toggling every second: never off for 5 s
        assert alarm.observe(t % 2 == 0, t * S) == []
    assert alarm.state is B
    assert steps(alarm.tick(20 * S)) == [("cleared", B, D, 14)]


def test_late_points_do_not_move_an_alarm_back_in_time() -> None:
    alarm = Alarm("a")
    alarm.observe(True, 10 * S)
    assert alarm.observe(False, 5 * S) == []
    assert alarm.state is B


def test_shelved_hides_the_alarm_and_a_standing_condition_returns_unacknowledged() -> None:
    alarm = Alarm("a")
    alarm.observe(True, 1 * S)
    log = alarm.shelve(2 * S, until_ns=100 * S, user="wang", comment="sensor being replaced")
    log += alarm.observe(False, 3 * S)  # followed, not annunciated
    log += alarm.observe(True, 4 * S)
    log += alarm.unshelve(5 * S, user="wang")
    assert steps(log) == [
        ("shelved", B, F, 2),
        ("condition", F, F, 3),
        ("condition", F, F, 4),
        ("unshelved", F, B, 5),
    ]
    assert log[0].comment == "sensor being replaced"


def test_a_shelve_expires_by_itself() -> None:
    alarm = Alarm("a")
    alarm.observe(True, 1 * S)
    alarm.acknowledge(2 * S, user="li")
    alarm.shelve(3 * S, until_ns=60 * S, user="wang")
    alarm.observe(False, 10 * S)
    assert alarm.tick(59 * S) == []
    assert steps(alarm.tick(61 * S)) == [("shelve_expired", F, A, 60)]  # condition gone


def test_shelving_rules() -> None:
    alarm = Alarm("a")
    with pytest.raises(PayloadError, match="until: a shelve must end in the future"):
        alarm.shelve(10 * S, until_ns=10 * S, user="wang")
    with pytest.raises(PayloadError, match="a is normal: it is not shelved"):
        alarm.unshelve(10 * S, user="wang")
    alarm.set_in_service(10 * S, in_service=False, user="wang")
    with pytest.raises(PayloadError, match="a is out_of_service: it cannot be shelved"):
        alarm.shelve(11 * S, until_ns=20 * S, user="wang")


def test_suppressed_by_design_while_the_machine_is_stopped() -> None:
    alarm = Alarm("a")
    log = alarm.suppress(1 * S, on=True, reason="press stopped")
    log += alarm.observe(True, 2 * S)  # low pressure of a stopped machine: expected
    log += alarm.suppress(3 * S, on=True)  # a repeat: nothing
    log += alarm.observe(False, 4 * S)
    log += alarm.suppress(5 * S, on=False)
    assert steps(log) == [
        ("suppressed", A, G, 1),
        ("condition", G, G, 2),
        ("condition", G, G, 4),
        ("unsuppressed", G, A, 5),
    ]


def test_out_of_service_wins_over_suppression_and_returns_to_what_stands() -> None:
    alarm = Alarm("a")
    log = alarm.set_in_service(1 * S, in_service=False, user="zhao", comment="maintenance")
    log += alarm.suppress(2 * S, on=True)
    log += alarm.observe(True, 3 * S)
    log += alarm.suppress(4 * S, on=False)  # still out of service
    log += alarm.set_in_service(5 * S, in_service=True, user="zhao")
    assert steps(log) == [
        ("removed_from_service", A, H, 1),
        ("suppressed", H, H, 2),
        ("condition", H, H, 3),
        ("unsuppressed", H, H, 4),
        ("returned_to_service", H, B, 5),  # the condition stands: unacknowledged
    ]


def test_a_comment_is_journaled_without_a_change() -> None:
    alarm = Alarm("a")
    alarm.observe(True, S)
    (note,) = alarm.add_comment(2 * S, user="li", comment="called maintenance")
    assert (note.event, note.before, note.after) == (AlarmEvent.COMMENTED, B, B)
    with pytest.raises(PayloadError, match="comment: a comment needs text"):
        alarm.add_comment(3 * S, user="li", comment="  ")


def test_the_journal_survives_a_restart_and_the_alarm_continues(tmp_path: Path) -> None:
    path = tmp_path / "alarms" / "journal.sqlite"
    journal = AlarmJournal(path)
    alarm = Alarm("a", off_delay_ns=5 * S)
    journal.append(alarm.observe(True, 1 * S, 90.0))
    journal.append(alarm.acknowledge(2 * S, user="li", comment="on it"))
    journal.append(alarm.shelve(3 * S, until_ns=50 * S, user="wang"))
    other = Alarm("b")
    journal.append(other.observe(True, 4 * S))
    journal.close()

    journal = AlarmJournal(path)  # a new process
    statuses = journal.statuses()
    assert statuses["a"] == alarm.status
    again = Alarm.restore("a", statuses["a"], off_delay_ns=5 * S)
    assert again.state is F
    expired = again.tick(51 * S)
    # still on: it comes back unacknowledged, though acknowledged before the shelve
    assert steps(expired) == [("shelve_expired", F, B, 50)]
    journal.append(expired)
    entries = journal.entries(alarm="a")
    assert [(e.event.value, e.before, e.after, e.user, e.comment) for e in entries] == [
        ("activated", A, B, "", ""),
        ("acknowledged", B, C, "li", "on it"),
        ("shelved", C, F, "wang", ""),
        ("shelve_expired", F, B, "", ""),
    ]
    assert entries[0].value == 90.0
    assert [e.alarm for e in journal.entries(start_ns=3 * S, end_ns=5 * S)] == ["a", "b"]
    assert Alarm.restore("b", journal.statuses()["b"]).state is B
    # an operator's view: newest first, paged back by the oldest seq seen
    newest = journal.entries(newest_first=True, limit=2)
    assert [e.event.value for e in newest] == ["shelve_expired", "activated"]
    older = journal.entries(newest_first=True, before_seq=newest[-1].seq, limit=2)
    assert [(e.alarm, e.event.value) for e in older] == [("a", "shelved"), ("a", "acknowledged")]
    assert [e.seq for e in journal.entries(before_seq=older[-1].seq)] == [entries[0].seq]
    journal.close()
