"""The OpenAPI document declares the errors every route can answer, not only its own.

Some answers do not come from a route but from the machinery around every route: FastAPI
answers ``400`` when a body cannot be parsed at all and ``422`` when a parameter or body
field is invalid, and :class:`~.body_limit.BodyLimit` answers ``413`` to a body over its
limit. A client generated from the document (and Schemathesis, which checks each answer
against it: tests/contract/test_openapi_fuzz.py) must find those statuses declared on
each operation they can reach, with the one error envelope, so they are added here in one
place rather than repeated on every route. A route's own declaration of a status wins,
except FastAPI's default ``422`` (its ``HTTPValidationError`` shape, ``{"detail": [...]}``),
which this API never answers: the envelope replaces it. Statuses that every route of a
kind answers for the same reason (authentication's 401/403 once routes require it, and
the 503 of a store that is unavailable) belong in :data:`COMMON_ERRORS` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from shopfloor.server.api.auth import Public

__all__ = ["COMMON_ERRORS", "declare_common_errors"]

_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")

COMMON_ERRORS: dict[str, tuple[str, str]] = {
    "400": ("body", "The body cannot be parsed (not JSON, or not UTF-8)."),
    "413": ("body", "The body is over the size limit; `message` names the limit."),
    "422": ("input", "A parameter or body field is invalid; `field` names it."),
    "401": ("credential", "No credential, or one that is unknown, expired or revoked."),
    "403": ("credential", "The credential's role lacks the permission this needs."),
    "503": (
        "credential",
        "A store this needs is unavailable (`message` names it: the historian, the analytics "
        "store, the security store or the audit log), e.g. while PostgreSQL restarts; nothing "
        "was done. Try again after `Retry-After` seconds.",
    ),
}
"""Status → (what an operation needs to be able to answer it, description): ``body`` for
operations that take a request body, ``input`` for those with any parameter or body,
``credential`` for every operation that is not open to anybody (deny by default): each
looks its caller up in the security store, so each can also find a store unavailable
(503, :mod:`.unavailable`); a public operation that uses a store declares 503 itself."""

_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


def declare_common_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare :data:`COMMON_ERRORS` on each operation they apply to.

    Call it once the routes are included; the document is still built lazily, on its
    first request, and cached by FastAPI as before.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _add_common_errors(document, public=_public_operations(app))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _public_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of the operations open to anybody (``dependencies=[PUBLIC]``)."""
    public: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        calls = [d.call for d in dependant.dependencies] if dependant is not None else []
        if route.path is not None and any(isinstance(c, Public) for c in calls):
            public |= {(route.path, m.lower()) for m in route.methods or ()}
    return public


def _add_common_errors(document: dict[str, Any], *, public: set[tuple[str, str]]) -> None:
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            has_body = "requestBody" in operation
            has_input = has_body or bool(operation.get("parameters"))
            guarded = (path, method) not in public
            responses = operation.setdefault("responses", {})
            for status, (needs, description) in COMMON_ERRORS.items():
                applies = {"body": has_body, "input": has_input, "credential": guarded}[needs]
                if applies and (status not in responses or _fastapi_default(responses[status])):
                    responses[status] = {"description": description, "content": _ENVELOPE}
    schemas = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_SCHEMAS:  # HTTPValidationError first: it refers to the other
        kept = dict(schemas)
        kept.pop(name, None)
        if f'"#/components/schemas/{name}"' not in json.dumps({**document, "components": kept}):
            schemas.pop(name, None)


def _fastapi_default(response: dict[str, Any]) -> bool:
    """Whether ``response`` is FastAPI's own 422, which the envelope replaces."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _FASTAPI_422)
