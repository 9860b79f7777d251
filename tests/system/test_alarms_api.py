"""Alarms end to end: a real server process with alarm rules, points over HTTP ingest,
the operator's actions over the API, and the journal across a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from shopfloor.model import PointBatch, Quality, now_ns
from shopfloor.testing.auth import act_as
from shopfloor.testing.processes import free_port, shopfloor_process
from shopfloor.wire import ARROW_MEDIA_TYPE, encode_arrow

S = 10**9
OIL = "acme/p1/press/l1/c1/press-1/oil_temp"
PLC = "acme/p1/press/l1/c1/press-1/plc_ok"

CONFIG = """\
[server]
port = {port}
data_dir = "data"

[[alarms.rules]]
tag = "{oil}"
kind = "H"
limit = 80.0
deadband = 2.0
priority = "high"
message = "oil {{value:.1f}} above {{limit}}"

[[alarms.rules]]
tag = "{plc}"
kind = "bad_quality"
priority = "critical"
"""


def send(http: httpx.Client, rows: list[tuple[str, int, float, int]], seq: int) -> None:
    body = encode_arrow(PointBatch.from_points(rows), edge="press-edge", seq=seq)
    answer = http.post("/api/v1/ingest", content=body, headers={"content-type": ARROW_MEDIA_TYPE})
    assert answer.status_code == 200, answer.text


def standing(http: httpx.Client, want: int) -> list[dict[str, Any]]:
    """The standing alarms, once there are ``want`` of them (the engine follows ingest)."""
    deadline = time.monotonic() + 20
    while True:
        rows: list[dict[str, Any]] = http.get("/api/v1/alarms").json()
        if len(rows) == want or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_alarms_come_in_are_acknowledged_and_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "server.toml").write_text(CONFIG.format(port=port, oil=OIL, plc=PLC))
    t0 = now_ns()
    bad = int(Quality.BAD_NO_COMMUNICATION)
    with shopfloor_process(
        ["server", "--config", "server.toml"], port=port, workdir=tmp_path
    ) as run:
        with httpx.Client(base_url=run.base_url, timeout=30, headers=run.headers) as http:
            send(http, [(OIL, t0, 79.0, 0), (OIL, t0 + S, 84.5, 0), (PLC, t0, 0.0, bad)], 1)
            rows = standing(http, 2)
            assert [(r["name"], r["state"], r["priority"]) for r in rows] == [
                (f"{PLC}.bad_quality", "unacknowledged", "critical"),
                (f"{OIL}.H", "unacknowledged", "high"),
            ]
            assert rows[1]["message"] == "oil 84.5 above 80.0"
            li, wang = act_as(http, "li"), act_as(http, "wang")
            ack = http.post(
                "/api/v1/alarms/acknowledge",
                json={"alarm": f"{OIL}.H", "user": "li", "comment": "cooling on"},
                headers=li,
            )
            assert ack.status_code == 200, ack.text
            assert (ack.json()["before"], ack.json()["after"]) == ("unacknowledged", "acknowledged")
            again = http.post(
                "/api/v1/alarms/acknowledge", json={"alarm": f"{OIL}.H", "user": "li"}, headers=li
            )
            assert again.status_code == 422
            assert "nothing to acknowledge" in again.json()["error"]["message"]
            missing = http.post(
                "/api/v1/alarms/acknowledge", json={"alarm": "nope", "user": "li"}, headers=li
            )
            assert missing.status_code == 404
            shelve = http.post(
                "/api/v1/alarms/shelve",
                json={"alarm": f"{PLC}.bad_quality", "user": "wang", "duration": "8h"},
                headers=wang,
            )
            assert shelve.json()["after"] == "shelved"
            too_long = http.post(
                "/api/v1/alarms/shelve",
                json={"alarm": f"{PLC}.bad_quality", "user": "wang", "duration": "3d"},
                headers=wang,
            )
            assert (too_long.status_code, too_long.json()["error"]["field"]) == (422, "duration")
            no_user = http.post("/api/v1/alarms/comment", json={"alarm": f"{OIL}.H"})
            assert no_user.status_code == 422
        assert run.stop() == 0, run.log()

    with shopfloor_process(
        ["server", "--config", "server.toml"], port=port, workdir=tmp_path
    ) as run:
        with httpx.Client(base_url=run.base_url, timeout=30, headers=run.headers) as http:
            listed = http.get("/api/v1/alarms")
            assert listed.status_code == 200, (listed.text, run.log())
            states = {r["name"]: r["state"] for r in listed.json()}
            assert states == {f"{PLC}.bad_quality": "shelved", f"{OIL}.H": "acknowledged"}
            send(http, [(OIL, t0 + 2 * S, 77.0, 0)], 2)  # below the deadband: it clears
            assert [r["name"] for r in standing(http, 1)] == [f"{PLC}.bad_quality"]
            journal = http.get("/api/v1/alarms/journal", params={"alarm": f"{OIL}.H"}).json()
            assert [(e["event"], e["after"], e["user"], e["comment"]) for e in journal] == [
                ("activated", "unacknowledged", "", ""),
                ("acknowledged", "acknowledged", "li", "cooling on"),
                ("cleared", "normal", "", ""),
            ]
            assert journal[0]["value"] == 84.5
            seqs = [e["seq"] for e in journal]
            assert seqs == sorted(seqs)
            kpis = http.get("/api/v1/alarms/kpis", params={"start": "-1h"}).json()
            assert kpis["activations"] == 2
            assert sorted((b["alarm"], b["count"]) for b in kpis["bad_actors"]) == [
                (f"{OIL}.H", 1),
                (f"{PLC}.bad_quality", 1),
            ]
            assert (kpis["floods"], kpis["chattering"]) == ([], [])
            backwards = http.get("/api/v1/alarms/kpis", params={"start": "now", "end": "-1h"})
            assert (backwards.status_code, backwards.json()["error"]["field"]) == (422, "end")
        assert run.stop() == 0, run.log()
