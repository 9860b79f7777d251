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
kind answers for the same reason (authentication's 401/403 once routes require it) belong
in :data:`COMMON_ERRORS` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

__all__ = ["COMMON_ERRORS", "declare_common_errors"]

_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")

COMMON_ERRORS: dict[str, tuple[str, str]] = {
    "400": ("body", "The body cannot be parsed (not JSON, or not UTF-8)."),
    "413": ("body", "The body is over the size limit; `message` names the limit."),
    "422": ("input", "A parameter or body field is invalid; `field` names it."),
}
"""Status → (what an operation needs to be able to answer it, description): ``body`` for
operations that take a request body, ``input`` for those with any parameter or body."""

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
            _add_common_errors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_common_errors(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            has_body = "requestBody" in operation
            has_input = has_body or bool(operation.get("parameters"))
            responses = operation.setdefault("responses", {})
            for status, (needs, description) in COMMON_ERRORS.items():
                applies = has_body if needs == "body" else has_input
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
