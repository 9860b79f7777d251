"""Writes to equipment in two steps: ask (the present value and a confirmation), confirm.

The platform's side of a write decides whether it may happen; the connector's side
(:class:`EquipmentWriter`, implemented next to the connectors) knows how:

1. :meth:`WriteService.request` checks the tag and value, reads the tag's present value
   from the device and hands out an opaque, single-use confirmation valid for
   ``confirm_within_s`` (60 s), bound to the user who asked, the tag and the value;
2. :meth:`WriteService.confirm` takes that confirmation back once, checks again that
   writes are still enabled for the connector, writes, and reads the value back.

A refused step raises :class:`WriteDenied` (``code`` and ``field`` for the API's answer)
or the checker's :class:`~shopfloor.errors.PayloadError`; nothing reaches the device
unless every check passed. Pending confirmations are bounded (house rule 2): past
``max_pending`` the oldest is dropped, counted and logged once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shopfloor.model.control import WritableTag, WriteValue
from shopfloor.server.writes.confirmations import Confirmations, MemoryConfirmations
from shopfloor.server.writes.switches import WriteSwitches
from shopfloor.server.writes.ticket import Confirmation, WriteDenied

__all__ = [
    "CONFIRM_WITHIN_S",
    "Confirmation",
    "EquipmentWriter",
    "WriteDenied",
    "WriteDone",
    "WriteService",
    "reference",
]

logger = logging.getLogger(__name__)

CONFIRM_WITHIN_S = 60.0
"""How long a confirmation stays valid."""

MAX_PENDING = 256
"""The most confirmations waiting at once; the oldest is dropped beyond."""


class EquipmentWriter(Protocol):
    """The connector side of writes (``shopfloor.edge.writes.EquipmentWriter`` in a
    single-box install): checks a value against the tag's configuration, reads, writes."""

    def connectors(self) -> Sequence[str]:
        """The names of the connectors that can write."""

    def target(self, path: str) -> WritableTag | None:
        """The tag at ``path`` of a connector that can write, or None."""

    def targets(self) -> list[WritableTag]:
        """Every writable tag."""

    def check(self, path: str, value: WriteValue) -> WriteValue:
        """``value`` as the tag takes it; PayloadError (field ``path`` or ``value``)."""

    async def read(self, path: str) -> WriteValue | None:
        """The tag's present value from the device."""

    async def write(self, path: str, value: WriteValue) -> WriteValue | None:
        """Check, write and read back; the value read back."""


@dataclass(frozen=True, slots=True)
class WriteDone:
    """The answer to the second step: the value read just before the write, the value
    asked for, and the value read back after it."""

    tag: WritableTag
    old: WriteValue | None
    requested: WriteValue
    new: WriteValue | None


def reference(confirmation_id: str) -> str:
    """A short digest of a confirmation for the audit log, which must not hold the id
    itself (anyone reading the log could confirm within the minute)."""
    return hashlib.sha256(confirmation_id.encode()).hexdigest()[:12]


class WriteService:
    """Enables writes per connector and runs the two-step write.

    Args:
        writers: the connector sides (one per set of connectors run in this process).
        switches: the per-connector switches (already loaded).
        monotonic: seconds on a monotonic clock (injected by tests to move time).
        confirm_within_s: how long a confirmation is valid.
        max_pending: the most confirmations waiting at once (in this server's memory).
        confirmations: where confirmations wait between the steps (several API servers:
            :class:`~.confirmations.PgConfirmations`); this server's memory if not given.
    """

    def __init__(
        self,
        writers: Sequence[EquipmentWriter],
        switches: WriteSwitches,
        *,
        monotonic: Callable[[], float],
        confirm_within_s: float = CONFIRM_WITHIN_S,
        max_pending: int = MAX_PENDING,
        confirmations: Confirmations | None = None,
    ) -> None:
        self._writers = list(writers)
        self.switches = switches
        self._monotonic = monotonic
        self.confirm_within_s = confirm_within_s
        self.confirmations = confirmations or MemoryConfirmations(
            monotonic=monotonic, max_pending=max_pending
        )

    @property
    def dropped(self) -> int:
        """Confirmations dropped unused because too many waited."""
        return self.confirmations.dropped

    # ------------------------------------------------------------- switches
    def connectors(self) -> list[str]:
        """Every connector that can write, enabled or not."""
        return [name for w in self._writers for name in w.connectors()]

    def targets(self) -> list[WritableTag]:
        """Every tag configured writable."""
        return [t for w in self._writers for t in w.targets()]

    def enabled(self, connector: str) -> bool:
        """Whether writes through ``connector`` are on (as last read: see :meth:`refresh`)."""
        return self.switches.enabled(connector)

    async def refresh(self) -> None:
        """Read the switches again (shared by several API servers: another may have
        turned one)."""
        await self.switches.refresh()

    async def set_enabled(self, connector: str, enabled: bool) -> bool:
        """Turn writes through ``connector`` on or off; what it was before.

        Raises:
            WriteDenied: no connector of that name can write (``unknown_connector``).
            OSError: the switch could not be stored.
        """
        if connector not in self.connectors():
            raise WriteDenied(
                "unknown_connector",
                "name",
                f"no connector {connector!r} that allows writes runs here (a Modbus or S7 "
                "connector whose section has allow_writes = true)",
            )
        before = await self.switches.set(connector, enabled)
        if not enabled:  # what was asked under the old switch must not go through
            # a store that does not answer logs it; the confirm step checks the switch again
            with contextlib.suppress(WriteDenied):
                await self.confirmations.withdraw(connector)
        return before

    # ---------------------------------------------------------------- steps
    def target(self, path: str) -> tuple[EquipmentWriter, WritableTag]:
        """The writer and description of the tag at ``path``.

        Raises:
            WriteDenied: no connector that can write has the tag (``unknown_tag``).
        """
        for writer in self._writers:
            tag = writer.target(path)
            if tag is not None:
                return writer, tag
        raise WriteDenied(
            "unknown_tag",
            "path",
            f"no connector that allows writes (allow_writes = true) has tag {path!r}",
        )

    async def present(self, path: str) -> WriteValue | None:
        """The tag's present value from the device (for the audit of a refused request)."""
        writer, _ = self.target(path)
        return await writer.read(path)

    def check(self, path: str, value: WriteValue) -> tuple[WritableTag, WriteValue]:
        """Every check of the first step that needs no device: the tag, its connector's
        switch, the value.

        Raises:
            WriteDenied: an unknown tag, or writes are off for its connector.
            PayloadError: the tag is not writable (``path``) or the value does not fit it
                (``value``).
        """
        writer, tag = self.target(path)
        if not self.enabled(tag.connector):
            raise WriteDenied(
                "writes_disabled",
                None,
                f"writes through connector {tag.connector} are off: an admin enables them "
                f"with PUT /api/v1/connectors/{tag.connector}/writes",
            )
        return tag, writer.check(path, value)

    async def request(
        self, path: str, value: WriteValue, *, user: str, old: WriteValue | None
    ) -> Confirmation:
        """The first step: a confirmation for writing ``value`` to ``path`` as ``user``.

        Args:
            old: the tag's present value, read by the caller (it is audited either way).

        Raises:
            WriteDenied, PayloadError: as :meth:`check`.
        """
        await self.refresh()
        tag, checked = self.check(path, value)
        ticket = Confirmation(
            id=secrets.token_urlsafe(18),
            tag=tag,
            old=old,
            new=checked,
            asked=value,
            user=user,
            expires_s=self._monotonic() + self.confirm_within_s,
        )
        await self.confirmations.put(ticket, within_s=self.confirm_within_s)
        return ticket

    async def take(self, confirmation_id: str, *, user: str) -> Confirmation:
        """Take a confirmation back (once: a second take is refused, on any server that
        shares the confirmations).

        Raises:
            WriteDenied: unknown or already used, expired, or asked by another user; or
                the shared confirmations cannot be reached (``confirmations_unavailable``).
        """
        ticket = await self.confirmations.take(confirmation_id, within_s=self.confirm_within_s)
        if ticket.user != user:
            raise WriteDenied(
                "confirmation_mismatch",
                "confirmation",
                "this confirmation was asked for by another user",
                path=ticket.tag.path,
            )
        return ticket

    async def confirm(self, ticket: Confirmation) -> WriteDone:
        """The second step: write what ``ticket`` (from :meth:`take`) says, read it back.

        Raises:
            WriteDenied: writes were turned off in between (``writes_disabled``).
            PayloadError: the tag's configuration no longer takes the value.
            WriteRefused: the device refused the write.
            ConnectorUnavailable: the device does not answer.
        """
        path = ticket.tag.path
        writer, _ = self.target(path)
        await self.refresh()
        self.check(path, ticket.new)
        old = await writer.read(path)  # what is overwritten, which may have moved since
        new = await writer.write(path, ticket.new)
        return WriteDone(tag=ticket.tag, old=old, requested=ticket.new, new=new)
