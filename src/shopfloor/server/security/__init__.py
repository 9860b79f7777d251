"""Who may do what, and the record of what was done: today the audit log and the one place
that names the acting user; users, roles and tokens come with issue 8."""

from shopfloor.server.security.actor import USER_HEADER, acting_user
from shopfloor.server.security.audit import AuditEntry, AuditError, AuditLog, Outcome

__all__ = ["USER_HEADER", "AuditEntry", "AuditError", "AuditLog", "Outcome", "acting_user"]
