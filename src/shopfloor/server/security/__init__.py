"""Who may do what, and the record of what was done: users, roles, sessions, API tokens
(:mod:`.service`, :mod:`.roles`) and the audit log (:mod:`.audit`)."""

from shopfloor.server.security.actor import USER_HEADER, ActorMismatch, acting_user
from shopfloor.server.security.audit import AuditEntry, AuditError, AuditLog, Outcome
from shopfloor.server.security.passwords import PasswordRejected
from shopfloor.server.security.roles import Permission, Role
from shopfloor.server.security.service import Auth, LoginRefused, Principal
from shopfloor.server.security.store import SecurityError

__all__ = [
    "USER_HEADER",
    "ActorMismatch",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "Auth",
    "LoginRefused",
    "Outcome",
    "PasswordRejected",
    "Permission",
    "Principal",
    "Role",
    "SecurityError",
    "acting_user",
]
