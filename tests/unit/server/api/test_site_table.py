"""Site scoping, operation by operation: a role × operation × area table generated from the
OpenAPI document.

Every operation that names a plant object (a tag, an equipment, a line, an alarm, a chart,
a writable tag, a place in the tree) is called by each role that may call it, as a user
limited to the area ``machining``, once with an object of that area (anything but 403) and
once with the same kind of object of the area ``moulding`` (403, naming the parameter and
the object). Every listing is called as that user and must hold nothing of another area,
or be refused whole where the design refuses whole-plant answers to a scoped user.

Deny by default, here too: an operation of the document this table cannot place, or a
parameter it cannot classify, fails the test until somebody classifies it below.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from shopfloor.config.analytics import AnalyticsSection
from shopfloor.config.mqtt_link import TOPIC_WRITABLES, MqttLinkSettings
from shopfloor.config.spc import SpcChartConfig
from shopfloor.model import LiveBatch, PointBatch
from shopfloor.runtime.channels import Channel
from shopfloor.server.analytics.anomaly_monitor import AnomalyMonitor, watched_machines
from shopfloor.server.analytics.energy_service import EnergyService, meters_of
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.service import Analytics
from shopfloor.server.api import create_app
from shopfloor.server.assets import AssetModel
from shopfloor.server.assets.editor import PlantEditor
from shopfloor.server.assets.model import load_asset_model
from shopfloor.server.historian.duckdb import DuckDBHistorian
from shopfloor.server.ingest import Ingestor
from shopfloor.server.rules.engine import AlarmEngine
from shopfloor.server.rules.rule import AlarmRule
from shopfloor.server.security import Auth
from shopfloor.server.writes import WriteService, WriteSwitches
from shopfloor.server.writes.remote import RemoteWriter

from .test_permissions import EXPECTED, GRANTS

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
"""The async tests share the loop of the module's one plant."""

PASSWORD = "a long enough passphrase"
SITE = "acme/plant-1"
MINE = f"{SITE}/machining"
"""Area A: the area the scoped users may see."""
ROLES = ("viewer", "operator", "engineer", "admin")
CNC = f"{MINE}/line-1/cell-1/cnc-01"
IMM = f"{SITE}/moulding/line-2/cell-1/imm-01"
STALE = '"not-the-version"'
"""An If-Match no plant has: an allowed edit stops at 412 and changes nothing."""

OBJECTS: dict[str, tuple[str, str]] = {
    "tag": (f"{CNC}/spindle_temp", f"{IMM}/barrel_temp"),
    "equipment": ("cnc-01", "imm-01"),
    "line": ("line-1", "line-2"),
    "alarm": ("mill.hot", "press.hot"),
    "chart": ("mill-temp", "press-temp"),
    "writable": (f"{CNC}/spindle_speed_sp", f"{IMM}/mould_temp_sp"),
    "area": ("machining", "moulding"),
}
"""Each kind of plant object: one of area A, the same kind of area B (in the fixture)."""

OTHER_AREAS = (
    "moulding", "utilities", "imm-0", "conv-02", "comp-0", "mtr-main", "line-2", "press.hot"
)  # fmt: skip
"""Text that only an answer about another area than A can hold."""
OTHER_PREFIX = f"{SITE}/moulding"
"""Area B as a prefix."""
OWN_AREA = ("machining", "cnc-0", "mill.hot")
"""Text of area A: a listing that holds none of it proves nothing."""

# --------------------------------------------------------------- the classification
OBJECT_PARAMS: dict[str, str] = {
    "equipment": "equipment",
    "equipment_id": "equipment",
    "line": "line",
    "alarm": "alarm",
    "chart": "chart",
    "tag": "tag",
    "tags": "tag",
}
"""Parameter names that name a plant object, wherever they appear → the object's kind."""

OBJECT_OVERRIDES: dict[tuple[str, str], str | None] = {
    ("GET /api/v1/tags/{path}/series", "path"): "tag",
    ("POST /api/v1/writes", "path"): "writable",
    ("PUT /api/v1/tags", "tags"): "tag",  # tags[].path
    ("POST /api/v1/assets/equipment", "area"): "area",
    ("POST /api/v1/assets/equipment", "line"): None,  # the place is checked whole: area
    ("POST /api/v1/ingest", "body"): "tag",  # points[].tag
}
"""Per operation: a parameter named differently (None: not tested on its own)."""

NEUTRAL = {
    # times, ranges, shapes and options
    "start", "end", "from", "to", "at", "group", "micro", "by", "state", "after_seq",
    "before_seq", "order", "limit", "bucket", "agg", "tz", "method", "format", "shape",
    "time_format", "interval_ms", "interval", "fill", "kind", "date", "shift", "top",
    "subgroup_size", "baseline_start", "baseline_end", "baseline_subgroups", "lsl", "usl",
    "target", "rules",
    # headers
    "If-Match", "X-Shopfloor-Edge-Time", "Content-Encoding",
    # body fields that are not plant objects
    "user", "comment", "duration", "in_service", "reason", "value", "confirmation", "id",
    "template", "cell", "description", "manufacturer", "serial", "location",
    "criticality", "attributes", "bindings", "connector",
}  # fmt: skip
"""Parameter names that never name a plant object."""

PREFIX = {"prefix"}
"""Parameters that narrow a listing to a subtree (tested as listings)."""

NOT_PLANT: dict[str, str] = {
    "GET /healthz": "liveness and counters, no plant object",
    "POST /api/v1/auth/login": "the caller's own session",
    "POST /api/v1/auth/logout": "the caller's own session",
    "GET /api/v1/auth/me": "the caller's own account",
    "PATCH /api/v1/auth/me": "the caller's own account",
    "POST /api/v1/auth/password": "the caller's own account",
    "POST /api/v1/auth/totp": "the caller's own account",
    "POST /api/v1/auth/totp/confirm": "the caller's own account",
    "DELETE /api/v1/auth/totp": "the caller's own account",
    "GET /api/v1/users": "accounts (admins only), not plant objects",
    "POST /api/v1/users": "accounts (admins only), not plant objects",
    "PATCH /api/v1/users/{name}": "accounts (admins only), not plant objects",
    "PUT /api/v1/users/{name}/password": "accounts (admins only), not plant objects",
    "DELETE /api/v1/users/{name}/totp": "accounts (admins only), not plant objects",
    "GET /api/v1/tokens": "credentials (admins only), not plant objects",
    "POST /api/v1/tokens": "credentials (admins only), not plant objects",
    "DELETE /api/v1/tokens/{token_id}": "credentials (admins only), not plant objects",
    "GET /api/v1/audit": "the security log (admins only) covers the server, not an area",
    "GET /api/v1/audit/verify": "the security log (admins only) covers the server",
    "GET /api/v1/edges": "edges are infrastructure: they have no asset path",
    "PUT /api/v1/edges/{edge_id}/status": "an edge's own status (edge credentials)",
    "GET /api/v1/connectors": "connectors are infrastructure: they have no asset path",
    "PUT /api/v1/connectors/{name}/writes": "a connector's switch (admins only)",
}
"""Operations that address no plant object, and why."""

LISTINGS: dict[str, dict[str, str]] = {
    "GET /api/v1/tags": {},
    "GET /api/v1/values/latest": {},
    "GET /api/v1/values/at": {"prefix": SITE, "at": "now"},
    "GET /api/v1/history": {"prefix": SITE, "from": "-1h", "to": "now"},
    "GET /api/v1/storage": {"group": "tag"},
    "GET /api/v1/assets": {},
    "GET /api/v1/alarms": {"state": "all"},
    "GET /api/v1/alarms/journal": {},
    "GET /api/v1/alarms/kpis": {},
    "GET /api/v1/oee": {},
    "GET /api/v1/downtime": {},
    "GET /api/v1/downtime/pareto": {"by": "equipment"},
    "GET /api/v1/energy": {},
    "GET /api/v1/anomaly": {},
    "GET /api/v1/rul": {},
    "GET /api/v1/writes": {},
}
"""Listings and plant-wide aggregates: the query a scoped user sends."""

REFUSED: dict[str, dict[str, str]] = {
    "GET /api/v1/assets/export": {},
    "GET /api/v1/assets/export.zip": {},
    "GET /api/v1/reports/{kind}": {"date": "2026-11-27"},
}
"""Whole-plant files: refused outright to a user limited to sites."""

REQUIRED: dict[str, dict[str, str]] = {
    "GET /api/v1/spc": {"kind": "imr"},
    "GET /api/v1/values/at": {"at": "now"},
}
"""Required query parameters that are not objects, per operation."""

PATH_VALUES = {"start": "2026-01-01T00:00:00Z", "kind": "day"}
"""Path parameters that are not objects."""

Body = Callable[[str], Any]
BODIES: dict[str, Body] = {
    "POST /api/v1/alarms/acknowledge": lambda v: {"alarm": v},
    "POST /api/v1/alarms/unshelve": lambda v: {"alarm": v},
    "POST /api/v1/alarms/shelve": lambda v: {"alarm": v, "duration": "1h"},
    "POST /api/v1/alarms/comment": lambda v: {"alarm": v, "comment": "checked"},
    "POST /api/v1/alarms/service": lambda v: {"alarm": v, "in_service": True},
    "PUT /api/v1/downtime/{equipment}/{start}": lambda v: {"reason": 1},
    "PUT /api/v1/assets/equipment/{equipment_id}": lambda v: {"location": "hall B"},
    "PATCH /api/v1/assets/equipment/{equipment_id}": lambda v: {"location": "hall B"},
    "POST /api/v1/assets/equipment": lambda v: {
        "id": "new-01", "template": "cnc-mill", "area": v, "line": "line-9", "cell": "cell-9"
    },
    "POST /api/v1/writes": lambda v: {"path": v, "value": 1000.0},
    "PUT /api/v1/tags": lambda v: {"tags": [{"path": v, "unit": "degC"}]},
    "POST /api/v1/ingest": lambda v: {"points": [{"tag": v, "ts": time.time_ns(), "value": 1}]},
}  # fmt: skip
"""The body of each operation that takes one, given the object under test."""

HEADERS: dict[str, dict[str, str]] = {
    "PUT /api/v1/assets/equipment/{equipment_id}": {"If-Match": STALE},
    "PATCH /api/v1/assets/equipment/{equipment_id}": {"If-Match": STALE},
    "DELETE /api/v1/assets/equipment/{equipment_id}": {"If-Match": STALE},
    "POST /api/v1/assets/equipment": {"If-Match": STALE},
}
"""Headers that keep an allowed call from changing the fixture plant."""

FIELDS = {"POST /api/v1/ingest": "tag"}
"""The field a refusal names where the parameter has no name (a batch's tag column)."""


@dataclass(frozen=True)
class Param:
    """A parameter of an operation: where it goes, its name, and the object kind it names."""

    where: str
    name: str
    kind: str | None


def _body_fields(spec: dict[str, Any], op: dict[str, Any]) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        return []
    schema = next(iter(content.values())).get("schema", {})
    ref = schema.get("$ref")
    if ref:
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    fields = list(schema.get("properties", {}))
    return fields or ["body"]  # a free-form body (a merge patch, an Arrow stream)


def classify(spec: dict[str, Any], name: str, op: dict[str, Any]) -> list[Param]:
    """The parameters of operation ``name``; AssertionError for one nobody classified."""
    found = [(p["in"], p["name"]) for p in op.get("parameters", [])]
    found += [("body", f) for f in _body_fields(spec, op)]
    out = []
    for where, pname in found:
        if (name, pname) in OBJECT_OVERRIDES:
            out.append(Param(where, pname, OBJECT_OVERRIDES[name, pname]))
        elif pname in OBJECT_PARAMS:
            out.append(Param(where, pname, OBJECT_PARAMS[pname]))
        elif pname in NEUTRAL or pname in PREFIX:
            out.append(Param(where, pname, None))
        elif where == "body" and pname == "body" and name in BODIES:
            out.append(Param(where, pname, None))  # a free-form edit of a named object
        else:
            raise AssertionError(
                f"{name}: the parameter {pname!r} ({where}) is not classified: add it to "
                "OBJECT_PARAMS, OBJECT_OVERRIDES or NEUTRAL in test_site_table.py"
            )
    return out


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m.upper()} {p}": op for p, ops in spec["paths"].items() for m, op in ops.items()}


def _may_call(name: str) -> list[str]:
    """The roles test_permissions' table lets call ``name`` (a new operation: none, and
    test_permissions fails until it is in that table)."""
    return [r for r in ROLES if EXPECTED.get(name) in GRANTS[r]]


def _spec() -> dict[str, Any]:
    """The OpenAPI document (the same with or without the services behind the routes)."""
    historian = DuckDBHistorian(None)
    live: Channel[LiveBatch] = Channel("live", maxsize=4)
    ingestor = Ingestor(historian, live)
    return create_app(historian=historian, ingestor=ingestor, live=live, version="0").openapi()


SPEC = _spec()
OPERATIONS = _operations(SPEC)


def _cells() -> list[Any]:
    cells = []
    for name, op in OPERATIONS.items():
        if name in NOT_PLANT:
            continue
        try:
            params = classify(SPEC, name, op)
        except AssertionError:
            continue  # test_every_operation_is_placed_in_the_table fails, naming it
        for param in params:
            if param.kind is None:
                continue
            for role in _may_call(name):
                for area in ("own-area", "other-area"):
                    cells.append(
                        pytest.param(
                            name, param, role, area, id=f"{name}?{param.name} [{role}, {area}]"
                        )
                    )
    return cells


def _has_prefix(name: str) -> bool:
    return any(p["name"] in PREFIX for p in OPERATIONS[name].get("parameters", []))


def _listing_cells() -> list[Any]:
    cells = []
    for name in sorted({*LISTINGS, *REFUSED}):
        ways = ["listing"] + (["other-area prefix"] if _has_prefix(name) else [])
        for role in _may_call(name):
            cells += [pytest.param(name, role, way, id=f"{name} [{role}, {way}]") for way in ways]
    return cells


def test_every_operation_is_placed_in_the_table() -> None:
    """Deny by default: each operation is an object operation, a listing, a refused
    whole-plant file, or declared to hold no plant object, and each parameter classified."""
    unplaced = []
    for name, op in OPERATIONS.items():
        if name in NOT_PLANT:
            continue
        params = classify(SPEC, name, op)  # raises for an unclassified parameter
        has_object = any(p.kind for p in params)
        if not has_object and name not in LISTINGS and name not in REFUSED:
            unplaced.append(name)
        if any(p.where == "body" for p in params) and name not in BODIES:
            unplaced.append(f"{name} (no BODIES entry)")
        required = [p["name"] for p in op.get("parameters", []) if p.get("required")]
        optional_objects = [
            p.name for p in params if p.kind and p.where == "query" and p.name not in required
        ]
        if optional_objects and name not in LISTINGS:
            unplaced.append(f"{name} (its plant-wide form is no LISTINGS entry)")
    stale = (set(NOT_PLANT) | set(LISTINGS) | set(REFUSED) | set(BODIES)) - set(OPERATIONS)
    assert not unplaced, f"classify these operations in test_site_table.py: {unplaced}"
    assert not stale, f"gone from the OpenAPI document: {sorted(stale)}"


# --------------------------------------------------------------------- the fixture plant
@dataclass
class Plant:
    app: Any
    users: dict[str, dict[str, str]]
    """Role → the header of a token acting as a user of that role limited to area A."""
    admin: dict[str, str]
    """An unscoped admin's header: the whole plant, to prove area B has data."""

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")


def _points(model: AssetModel, now: int) -> PointBatch:
    """Both machines ran, stopped half an hour an hour ago and run again; their
    temperatures, vibration, power and energy of the last hour."""
    hour = 3_600 * 10**9
    points = []
    for machine in (CNC, IMM):
        points += [
            (f"{machine}/state", now - 2 * hour, 1.0, 0),
            (f"{machine}/state", now - hour, 4.0, 0),
            (f"{machine}/state", now - hour // 2, 1.0, 0),
        ]
        measured = ("spindle_temp", "barrel_temp", "power_kw", "energy_kwh", "vibration_rms")
        for tag in model.tags:
            if tag.path.startswith(f"{machine}/") and tag.path.rsplit("/", 1)[1] in measured:
                points += [(tag.path, now - hour + i * 10**9, 60.0 + i, 0) for i in range(8)]
    return PointBatch.from_points(points)


def _anomaly(model: AssetModel, section: AnalyticsSection, historian: Any) -> AnomalyMonitor:
    """Every machine watched and estimated (nothing runs: what it lists is what counts)."""
    machines = [(m.id, m.path) for m in machines_of(model)]
    return AnomalyMonitor(
        section.anomaly.model_copy(update={"enabled": True}),
        section.rul.model_copy(update={"enabled": True}),
        watched_machines(machines, [t.path for t in model.tags], section.anomaly.tags),
        rul_machines=machines,
        historian=historian,
        publish=_drop,
    )


def _writes(tmp: Path) -> WriteService:
    """A writable tag in each area, as an edge announces them (no broker: a write of an
    allowed tag stops at the switch, off, or at the unreachable edge)."""
    link = MqttLinkSettings()
    remote = RemoteWriter(link, client_id="tests")  # never started
    tags = [
        {"path": path, "connector": "plc", "data_type": "float32", "unit": "rpm"}
        for path in OBJECTS["writable"]
    ]
    announced = httpx.Response(200, json={"connectors": ["plc"], "tags": tags}).content
    remote._receive(f"{link.topic_root}/edges/edge-1/{TOPIC_WRITABLES}", announced)
    assert len(remote.targets()) == 2
    return WriteService([remote], WriteSwitches(tmp / "writes.json"), monotonic=time.monotonic)


async def _users(auth: Auth) -> dict[str, dict[str, str]]:
    users = {}
    for role in ROLES:
        await auth.add_user(f"{role}-a", PASSWORD, role=role, sites=[MINE])
        _, secret = await auth.create_token(
            f"{role}-a", role=role, owner="tests", expires_ns=None, user=f"{role}-a"
        )
        users[role] = {"Authorization": f"Bearer {secret}"}
    return users


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plant]:
    """Two areas with data of every kind: points, alarms, control charts, machines with
    stops, energy, anomaly watch, writable tags, the plant file."""
    # worker threads start here, before the first test's thread check, and stay
    loop_executor = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    asyncio.get_running_loop().set_default_executor(loop_executor)
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(4)))
    tmp = tmp_path_factory.mktemp("site-table")
    demo = Path(str(resources.files("shopfloor") / "demo_plant"))
    shutil.copy(demo / "plant.toml", tmp / "plant.toml")
    shutil.copytree(demo / "templates", tmp / "templates")
    model = load_asset_model(tmp / "plant.toml", tmp / "templates")
    historian = DuckDBHistorian(None, flush_interval_s=0.05)
    await historian.start()
    concurrent.futures.wait([historian._readers.submit(time.sleep, 0.05) for _ in range(4)])
    live: Channel[LiveBatch] = Channel("live", maxsize=64)
    ingestor = Ingestor(historian, live)
    now = time.time_ns()
    await ingestor.ingest(_points(model, now), source="test")
    await historian.flush()
    section = AnalyticsSection()
    analytics = Analytics(historian, machines_of(model), section, tmp)
    await analytics.start()
    rules = [
        AlarmRule(OBJECTS["alarm"][0], OBJECTS["tag"][0], "HH", limit=50.0),
        AlarmRule(OBJECTS["alarm"][1], OBJECTS["tag"][1], "HH", limit=50.0),
    ]
    alarms = AlarmEngine(rules, tmp / "alarms.sqlite")
    await alarms.start()
    batch = PointBatch.from_points([(t, now, 99.0, 0) for t in OBJECTS["tag"]])
    assert len(await alarms.process(LiveBatch(batch))) == 2
    auth = Auth(None)
    app = create_app(
        historian=historian,
        ingestor=ingestor,
        live=live,
        version="9.9.9",
        auth=auth,
        alarms=alarms,
        assets=model,
        plant=PlantEditor(tmp / "plant.toml", tmp / "templates", model),
        spc_charts=[
            SpcChartConfig(name=chart, tag=tag, kind="imr")
            for chart, tag in zip(OBJECTS["chart"], OBJECTS["tag"], strict=True)
        ],
        analytics=analytics,
        energy=EnergyService(analytics, meters_of(model, section.energy), section.energy),
        anomaly=_anomaly(model, section, historian),
        writes=_writes(tmp),
    )
    users = await _users(auth)
    _, secret = await auth.create_token("plant", role="admin", owner="tests", expires_ns=None)
    try:
        yield Plant(app, users, {"Authorization": f"Bearer {secret}"})
    finally:
        await alarms.close()
        await analytics.close()
        await historian.close()
        loop_executor.shutdown(wait=True)


async def _drop(batch: PointBatch) -> None:
    """Anomaly scores go nowhere in this table."""


# ------------------------------------------------------------------------- the table
def _request(name: str, param: Param, value: str) -> dict[str, Any]:
    method, template = name.split(" ", 1)
    op = OPERATIONS[name]
    path = template
    query: dict[str, str] = dict(REQUIRED.get(name, {}))
    for p in op.get("parameters", []):
        if p["in"] == "path":
            given = value if p["name"] == param.name else PATH_VALUES[p["name"]]
            path = path.replace("{" + p["name"] + "}", given)
    if param.where == "query":
        query[param.name] = value
    request: dict[str, Any] = {
        "method": method,
        "url": path,
        "params": query,
        "headers": HEADERS.get(name, {}),
    }
    if name in BODIES:
        request["json"] = BODIES[name](value)
    return request


@IN_MODULE_LOOP
@pytest.mark.parametrize(("name", "param", "role", "area"), _cells())
async def test_a_scoped_user_reaches_its_own_areas_object_and_not_anothers(
    plant: Plant, name: str, param: Param, role: str, area: str
) -> None:
    assert param.kind is not None
    mine, other = OBJECTS[param.kind]
    value = mine if area == "own-area" else other
    request = _request(name, param, value)
    async with plant.client() as client:
        answer = await client.request(
            **{**request, "headers": {**request["headers"], **plant.users[role]}}
        )
    assert answer.status_code < 500, answer.text
    if area == "own-area":
        assert answer.status_code != 403, answer.text
        return
    assert answer.status_code == 403, f"{name} answered {answer.status_code}: {answer.text}"
    error = answer.json()["error"]
    field = FIELDS.get(name, param.name)
    assert error["field"] == field or error["field"].startswith(f"{field}["), error
    assert value in error["message"], error


@IN_MODULE_LOOP
@pytest.mark.parametrize(("name", "role", "way"), _listing_cells())
async def test_a_listing_holds_nothing_of_another_area(
    plant: Plant, name: str, role: str, way: str
) -> None:
    method, template = name.split(" ", 1)
    url = template.replace("{kind}", PATH_VALUES["kind"])
    query = dict(LISTINGS.get(name, REFUSED.get(name, {})))
    if way == "other-area prefix":
        query["prefix"] = OTHER_PREFIX
    async with plant.client() as client:
        scoped = await client.request(method, url, params=query, headers=plant.users[role])
        whole = await client.request(method, url, params=query, headers=plant.admin)
    if name in REFUSED:
        assert scoped.status_code == 403, scoped.text
        assert "whole plant" in scoped.json()["error"]["message"]
        return
    assert whole.status_code == 200, whole.text
    assert any(mark in whole.text for mark in OTHER_AREAS), f"no area-B data in {whole.text}"
    if way == "other-area prefix":  # narrowed to nothing: empty, or "no such tags"
        assert scoped.status_code in (200, 404, 422), scoped.text
        seen = scoped.text.replace(OTHER_PREFIX, "")  # the prefix sent may be echoed
        assert not [mark for mark in OTHER_AREAS if mark in seen], scoped.text[:2000]
        return
    assert scoped.status_code == 200, scoped.text
    leaked = [mark for mark in OTHER_AREAS if mark in scoped.text]
    assert not leaked, f"{name} shows a user of {MINE} {leaked}: {scoped.text[:2000]}"
    assert any(mark in scoped.text for mark in OWN_AREA), f"nothing of area A: {scoped.text}"
