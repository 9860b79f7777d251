"""Roles, permissions and API token scopes: the one table of who may do what.

Each role includes the one below it: ``admin`` > ``engineer`` > ``operator`` > ``viewer``.
Every API route declares one :class:`Permission`; a principal may call it when its role
(or its token's scope) grants that permission. Nothing is granted that is not in
:data:`ROLE_PERMISSIONS` or :data:`SCOPE_PERMISSIONS`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ROLE_PERMISSIONS",
    "SCOPE_PERMISSIONS",
    "Permission",
    "Role",
    "permissions_of",
]


class Permission(StrEnum):
    """What a route needs."""

    READ = "read"
    """Read values, history, alarms, analytics, the asset tree; the live websocket."""
    OPERATE = "operate"
    """Acknowledge, shelve and comment alarms; give stop (downtime) reasons."""
    ENGINEER = "engineer"
    """Edit the asset model (equipment, rules, calculations), connectors."""
    INGEST = "ingest"
    """Send batches, tag metadata and edge status (the edges' routes)."""
    ADMIN = "admin"
    """Users, API tokens, the audit log, settings."""


class Role(StrEnum):
    """A user's role; each includes the permissions of the ones below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"


_VIEWER = frozenset({Permission.READ})
_OPERATOR = _VIEWER | {Permission.OPERATE}
_ENGINEER = _OPERATOR | {Permission.ENGINEER, Permission.INGEST}
_ADMIN = _ENGINEER | {Permission.ADMIN}

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.ENGINEER: _ENGINEER,
    Role.ADMIN: _ADMIN,
}
"""Role → permissions (the table the deny-by-default check reads)."""

SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "read": _VIEWER,
    "operate": _OPERATOR,
    "ingest": frozenset({Permission.INGEST}),
}
"""API token scope → permissions, for tokens narrower than a role (a script that only
reads, an edge that only sends)."""


def permissions_of(role_or_scope: str) -> frozenset[Permission]:
    """The permissions a role or a token scope grants (none for an unknown name)."""
    return ROLE_PERMISSIONS.get(role_or_scope) or SCOPE_PERMISSIONS.get(role_or_scope, frozenset())
