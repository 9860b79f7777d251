"""Every PostgreSQL advisory lock class shopfloor takes, in one place.

An advisory lock is a pair of int4 keys: the first (the *class*) says what the lock is
for, the second which object (a schema, a partition, a machine). Two uses sharing a class
could block each other or be counted as the other's (the lease balance counts member locks
by class in ``pg_locks``), so every class is allocated here and a test checks that none is
used twice. ``0x5F`` marks shopfloor's (other applications on the same database pick their
own).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALARM_MEMBER",
    "ALARM_PARTITION",
    "ANALYTICS_MACHINE",
    "ANALYTICS_MEMBER",
    "ANALYTICS_PARTITION",
    "AUDIT_APPEND",
    "HISTORIAN_COMMIT",
    "HISTORIAN_WRITER",
    "SECURITY_SETUP",
]

HISTORIAN_WRITER: Final = 0x5F10
"""Session lock of a schema's writer(s), exclusive or shared (second: the schema)."""
HISTORIAN_COMMIT: Final = 0x5F11
"""Transaction lock serialising shared writers' commits (second: the schema)."""
ALARM_PARTITION: Final = 0x5F12
"""Session lock: the lease of an alarm partition (second: schema and partition)."""
ALARM_MEMBER: Final = 0x5F13
"""Session lock every alarm partition owner holds shared (second: the schema)."""
SECURITY_SETUP: Final = 0x5F14
"""Transaction lock while the shared security tables are created (second: the schema)."""
AUDIT_APPEND: Final = 0x5F15
"""Transaction lock serialising appends to the shared audit chain (second: the schema)."""
ANALYTICS_PARTITION: Final = 0x5F16
"""Session lock: the lease of an analytics partition (second: schema and partition)."""
ANALYTICS_MEMBER: Final = 0x5F17
"""Session lock every API server with analytics partitions holds shared."""
ANALYTICS_MACHINE: Final = 0x5F1A
"""Transaction lock around one machine's stored analytics (second: the machine's path)."""
