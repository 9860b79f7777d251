"""`shopfloor demo` as a user runs it: a real process, real HTTP, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from shopfloor.testing.processes import free_port, shopfloor_process

pytestmark = pytest.mark.system


def _wait_for(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_demo_serves_history_and_commits_everything_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    args = ["demo", "--port", str(port), "--data-dir", str(data), "--no-status", "--speed", "20"]
    args += ["--backfill", "10m"]
    with shopfloor_process(args, port=port, workdir=tmp_path) as demo:
        tags = demo.get("/api/v1/tags").json()["tags"]
        temps = [t["path"] for t in tags if t["path"].endswith("_temp")]
        assert temps, f"no temperature tag among {[t['path'] for t in tags]}"
        assert len({t["asset"] for t in tags}) >= 8, "expected about ten simulated machines"

        def series() -> list[float]:
            r = demo.get(f"/api/v1/tags/{temps[0]}/series", params={"start": "-1h"})
            assert r.status_code == 200, r.text
            values: list[float] = r.json()["columns"]["value"]
            return values if len(values) >= 30 else []

        values = _wait_for(series, 30, "30 points of a temperature")
        assert len(set(values)) > 1, "a simulated temperature should move"

        agg = demo.get(
            f"/api/v1/tags/{temps[0]}/series",
            params={"start": "-1h", "bucket": "1m", "agg": "avg,min,max"},
        ).json()["columns"]
        assert all(
            lo <= av <= hi for lo, av, hi in zip(agg["min"], agg["avg"], agg["max"], strict=True)
        )

        (sim,) = demo.get("/api/v1/connectors").json()["connectors"]
        assert sim["kind"] == "simulator"
        assert sim["state"] == "active"
        assert sim["reads"] > 0

        # the plant is described by the demo's templates, with their alarms
        site = demo.get("/api/v1/assets").json()["children"][0]
        machines = [
            eq
            for area in site["children"]
            for line in area["children"]
            for cell in line["children"]
            for eq in cell["children"]
        ]
        assert len(machines) == 10
        assert {eq["template"] for eq in machines} >= {"cnc-mill", "injection-press"}
        alarms = demo.get("/api/v1/alarms", params={"state": "all"}).json()
        assert sum(a["name"].endswith("/vibration_rms.HH") for a in alarms) == 5

        code = demo.stop(signal.SIGINT)
        assert code == 0, demo.log()
        log = demo.log()
    assert "Traceback" not in log, log
    stored = int(log.rsplit("stopped; ", 1)[1].split(" points stored")[0])
    with duckdb.connect(str(data / "history.duckdb"), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM points").fetchone()
    assert row is not None
    assert row[0] == stored > 0, "every accepted point is committed on Ctrl-C"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopfloor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_names_key_and_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "plant.toml"
    bad.write_text("[server]\nport = 8000\n\n[historian]\nflush_interval_s = -1\n")
    result = _cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "historian.flush_interval_s (line 5)" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text("[server]\nport = 8001\n")
    ok = _cli("config", "check", str(good))
    assert ok.returncode == 0, ok.stderr


def test_server_refuses_to_start_with_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "plant.toml"
    bad.write_text("[server]\nprot = 8000\n")
    result = _cli("server", "--config", str(bad))
    assert result.returncode == 2
    assert "server.prot (line 2): unknown key" in result.stderr
    assert not (tmp_path / "shopfloor-data").exists(), "nothing may start on a bad config"


def test_demo_reads_the_plant_through_a_real_modbus_stack(tmp_path: Path) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--no-status"]
    with shopfloor_process([*args, "--protocol", "modbus"], port=port, workdir=tmp_path) as demo:

        def modbus_connectors() -> list[dict[str, object]]:
            rows = demo.get("/api/v1/connectors").json()["connectors"]
            active = [r for r in rows if r["kind"] == "modbus" and r["reads"]]
            return active if len(active) == len(rows) >= 8 else []

        rows = _wait_for(modbus_connectors, 20, "every machine's Modbus connector to read")
        assert all(r["state"] == "active" for r in rows)
        temp = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp"

        def points() -> list[float]:
            r = demo.get(f"/api/v1/tags/{temp}/series", params={"start": "-5m"})
            values: list[float] = r.json()["columns"]["value"]
            return values if len(values) >= 3 else []

        values = _wait_for(points, 20, "temperatures read over Modbus")
        assert all(20 < v < 120 for v in values), values
        assert demo.stop() == 0, demo.log()


def test_demo_reads_the_plant_as_sparkplug_b_through_a_private_mosquitto(
    tmp_path: Path,
) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--no-status"]
    with shopfloor_process([*args, "--protocol", "sparkplug"], port=port, workdir=tmp_path) as demo:

        def sparkplug_points() -> list[float]:
            temp = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp"
            r = demo.get(f"/api/v1/tags/{temp}/series", params={"start": "-5m"})
            if r.status_code != 200:
                return []
            values: list[float] = r.json()["columns"]["value"]
            return values if len(values) >= 3 else []

        values = _wait_for(sparkplug_points, 30, "temperatures born and sent as Sparkplug B")
        assert all(20 < v < 120 for v in values), values
        (row,) = demo.get("/api/v1/connectors").json()["connectors"]
        assert row["kind"] == "sparkplug"
        assert row["state"] == "active"
        assert demo.stop() == 0, demo.log()
    assert "Traceback" not in demo.log()


def test_demo_over_opcua_and_browse_imports_its_address_space(tmp_path: Path) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--no-status"]
    with shopfloor_process([*args, "--protocol", "opcua"], port=port, workdir=tmp_path) as demo:
        temp = "acme/plant-1/machining/line-1/cell-1/cnc-01/spindle_temp"

        def points() -> list[float]:
            r = demo.get(f"/api/v1/tags/{temp}/series", params={"start": "-5m"})
            values: list[float] = r.json()["columns"]["value"] if r.status_code == 200 else []
            return values if len(values) >= 3 else []

        values = _wait_for(points, 30, "temperatures from an OPC UA subscription")
        assert all(20 < v < 120 for v in values), values
        (row,) = demo.get("/api/v1/connectors").json()["connectors"]
        assert (row["kind"], row["state"]) == ("opcua", "active")

        endpoint = demo.log().split("served over OPC UA at ", 1)[1].split()[0]
        browsed = _cli("opcua", "browse", endpoint, "--insecure", "--asset", "acme/imported")
        assert browsed.returncode == 0, browsed.stderr
        assert 'kind = "opcua"' in browsed.stdout
        assert browsed.stdout.count("[[connectors.tags]]") >= 80, browsed.stdout[:2000]
        assert "spindle_temp" in browsed.stdout
        refused = _cli("opcua", "browse", endpoint)
        assert refused.returncode == 2
        assert "--insecure" in refused.stderr
        assert demo.stop() == 0, demo.log()
