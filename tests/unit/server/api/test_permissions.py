"""Deny by default: every route declares its permission, and each role gets exactly what
the table of roles grants, route by route (the table below is written out by hand, so a
new route fails here until somebody decides who may call it)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from shopfloor.server.api.auth import CSRF_HEADER, Public, Require, permission_of
from shopfloor.server.security import Auth
from shopfloor.server.security.roles import Permission
from shopfloor.server.web.routes import router as web_router

from .conftest import MakeStack

PASSWORD = "a long enough passphrase"

EXPECTED: dict[str, str] = {
    "GET /healthz": "public",
    "POST /api/v1/auth/login": "public",
    "POST /api/v1/auth/logout": "authenticated",
    "GET /api/v1/auth/me": "authenticated",
    "PATCH /api/v1/auth/me": "authenticated",
    "POST /api/v1/auth/password": "session",
    "POST /api/v1/auth/totp": "session",
    "POST /api/v1/auth/totp/confirm": "session",
    "DELETE /api/v1/auth/totp": "session",
    "GET /api/v1/users": "admin",
    "POST /api/v1/users": "admin",
    "PATCH /api/v1/users/{name}": "admin",
    "PUT /api/v1/users/{name}/password": "admin",
    "DELETE /api/v1/users/{name}/totp": "admin",
    "GET /api/v1/tokens": "admin",
    "POST /api/v1/tokens": "admin",
    "DELETE /api/v1/tokens/{token_id}": "admin",
    "GET /api/v1/alarms": "read",
    "GET /api/v1/alarms/journal": "read",
    "GET /api/v1/alarms/kpis": "read",
    "POST /api/v1/alarms/acknowledge": "operate",
    "POST /api/v1/alarms/shelve": "operate",
    "POST /api/v1/alarms/unshelve": "operate",
    "POST /api/v1/alarms/comment": "operate",
    "POST /api/v1/alarms/service": "operate",
    "GET /api/v1/oee": "read",
    "GET /api/v1/downtime": "read",
    "GET /api/v1/downtime/pareto": "read",
    "PUT /api/v1/downtime/{equipment}/{start}": "operate",
    "GET /api/v1/energy": "read",
    "GET /api/v1/assets": "read",
    "GET /api/v1/assets/equipment/{equipment_id}": "read",
    "PUT /api/v1/assets/equipment/{equipment_id}": "engineer",
    "PATCH /api/v1/assets/equipment/{equipment_id}": "engineer",
    "DELETE /api/v1/assets/equipment/{equipment_id}": "engineer",
    "POST /api/v1/assets/equipment": "engineer",
    "GET /api/v1/assets/export": "read",
    "GET /api/v1/assets/export.zip": "read",
    "GET /api/v1/audit": "admin",
    "GET /api/v1/audit/verify": "admin",
    "GET /api/v1/connectors": "read",
    "GET /api/v1/tags": "read",
    "PUT /api/v1/tags": "ingest",
    "GET /api/v1/tags/{path}/series": "read",
    "GET /api/v1/values/latest": "read",
    "GET /api/v1/values/at": "read",
    "GET /api/v1/history": "read",
    "POST /api/v1/ingest": "ingest",
    "PUT /api/v1/edges/{edge_id}/status": "ingest",
    "GET /api/v1/edges": "read",
    "GET /api/v1/storage": "read",
    "GET /api/v1/spc/{chart}": "read",
    "GET /api/v1/spc": "read",
    "GET /api/v1/reports/{kind}": "read",
    "GET /api/v1/anomaly": "read",
    "GET /api/v1/rul": "read",
    "GET /api/v1/writes": "read",
    "POST /api/v1/writes": "engineer",
    "PUT /api/v1/connectors/{name}/writes": "admin",
}
"""Every operation of the OpenAPI document → who may call it."""

GRANTS: dict[str, set[str]] = {
    "viewer": {"read"},
    "operator": {"read", "operate"},
    "engineer": {"read", "operate", "engineer", "ingest"},
    "admin": {"read", "operate", "engineer", "ingest", "admin"},
    "token:read": {"read"},
    "token:operate": {"read", "operate"},
    "token:ingest": {"ingest"},
    "token:admin": {"read", "operate", "engineer", "ingest", "admin"},
}
"""What each kind of caller holds: users by role (logged in), API tokens by scope."""

OPEN_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""FastAPI's description of the API: it holds no plant data, and the code is open."""
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


async def _app(make_stack: MakeStack) -> Any:
    return (await make_stack(extra_routers=[web_router])).app


async def test_every_route_declares_its_permission(make_stack: MakeStack) -> None:
    app = await _app(make_stack)
    undeclared, open_writes = [], []
    for route in iter_route_contexts(app.routes):
        path = route.path
        if path in OPEN_DOCS:
            continue
        dependant = getattr(route, "dependant", None)
        markers = permission_of([d.call for d in dependant.dependencies] if dependant else [])
        methods = route.methods or {"WEBSOCKET"}
        if not markers:
            undeclared.append(f"{sorted(methods)} {path}")
        required = {m.permission for m in markers if isinstance(m, Require)}
        public = any(isinstance(m, Public) for m in markers)
        writes = methods & UNSAFE
        if writes and not public and required <= {Permission.READ, None}:
            open_writes.append(f"{sorted(writes)} {path}")
    assert not undeclared, f"routes without a declared permission: {undeclared}"
    # changes need more than reading, but for one's own session, password and language
    assert sorted(open_writes) == [
        "['DELETE'] /api/v1/auth/totp",
        "['PATCH'] /api/v1/auth/me",
        "['POST'] /api/v1/auth/logout",
        "['POST'] /api/v1/auth/password",
        "['POST'] /api/v1/auth/totp",
        "['POST'] /api/v1/auth/totp/confirm",
    ]


async def test_the_table_covers_every_operation_of_the_openapi_document(
    make_stack: MakeStack,
) -> None:
    spec = (await _app(make_stack)).openapi()
    operations = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    assert operations == set(EXPECTED), (
        f"new: {sorted(operations - set(EXPECTED))}, gone: {sorted(set(EXPECTED) - operations)}"
    )


def _url(path: str) -> str:
    path = path.replace("{path}", "plant/line/tag")
    return re.sub(r"\{[^}]+\}", "x", path)


async def _call(client: httpx.AsyncClient, op: str, headers: dict[str, str]) -> int:
    method, path = op.split(" ", 1)
    body = {"json": {}} if method in UNSAFE else {}
    response = await client.request(method, _url(path), headers=headers, **body)
    return response.status_code


async def test_anonymous_callers_get_401_on_every_route_but_the_public_ones(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app), base_url="http://t")
    async with anonymous:
        got = {op: await _call(anonymous, op, {}) for op in EXPECTED}
    wrong = {
        op: status for op, status in got.items() if (status == 401) == (EXPECTED[op] == "public")
    }
    assert not wrong, f"anonymous answers: {wrong}"


@pytest.mark.parametrize("caller", sorted(GRANTS))
async def test_each_role_and_scope_gets_exactly_what_the_table_grants(
    make_stack: MakeStack, caller: str
) -> None:
    auth = Auth(None)
    stack = await make_stack(auth=auth)
    transport = httpx.ASGITransport(app=stack.app)
    grants = GRANTS[caller]
    wrong = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        if caller.startswith("token:"):
            _, secret = await auth.create_token(
                "t", role=caller.split(":")[1], owner="tests", expires_ns=None
            )
            headers = {"Authorization": f"Bearer {secret}"}
        else:
            await auth.add_user("someone", PASSWORD, role=caller)
            login = await client.post(
                "/api/v1/auth/login", json={"name": "someone", "password": PASSWORD}
            )
            headers = {CSRF_HEADER: login.json()["csrf"]}
        for op, needs in EXPECTED.items():
            if op == "POST /api/v1/auth/logout":
                continue  # it would end the session the rest of the table runs in
            status = await _call(client, op, headers)
            allowed = (
                needs in ("public", "authenticated")
                or needs in grants
                or (needs == "session" and not caller.startswith("token:"))
            )
            if status == 401 or (status == 403) == allowed:
                wrong[op] = status
    assert not wrong, f"{caller}: answers against the table: {wrong}"
