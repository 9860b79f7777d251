"""The platform's commands to a remote edge: read a tag, write a confirmed value.

A command arrives over the broker on ``{root}/cmd/{edge}/{verb}`` (JSON) and is answered
on ``{root}/edges/{edge}/results`` with the command's ``id`` (docs/writes.md):

* ``read`` ``{"id", "path", "value"?}``: the tag's present value from the device
  (``old``); with ``value``, also checks that the tag would take it (``new``). The
  platform's first step of a write.
* ``write`` ``{"id", "path", "value", "expires_ns"}``: the value the operator confirmed:
  read (``old``), write, read back (``new``). The platform's second step.

The platform decides whether a write may happen (its switch, the confirmation, the
audit); the edge checks again with what only it holds: the connector's section must
say ``allow_writes = true`` and the tag ``writable = true`` (a second lock, see
:class:`~shopfloor.edge.writes.EquipmentWriter`). A ``write`` past its ``expires_ns``
(edge wall clock) is refused, so a command the broker kept for an edge that was away
is never carried out late; a ``write`` whose id was already seen is refused, so a QoS 1
redelivery never writes twice.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

from shopfloor.edge.writes import EquipmentWriter
from shopfloor.errors import ConnectorUnavailable, PayloadError, WriteRefused
from shopfloor.model.control import WriteValue
from shopfloor.runtime.clock import Clock, SystemClock

__all__ = ["MAX_COMMAND_BYTES", "CommandHandler", "writables"]

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 16 * 1024
"""A command larger than this is refused unread."""
_SEEN = 1024
"""How many write ids are remembered against redelivery."""


class _Invalid(Exception):  # noqa: N818 - internal signal: a malformed command
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class CommandHandler:
    """Carries out the platform's commands through ``writer``.

    Args:
        writer: the edge's connector side of writes (over its agent's connectors).
        clock: wall clock for ``expires_ns``.
    """

    def __init__(self, writer: EquipmentWriter, *, clock: Clock | None = None) -> None:
        self._writer = writer
        self._clock = clock or SystemClock()
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def handle(self, verb: str, payload: bytes) -> bytes | None:
        """The result of one command, as JSON to publish; None when it cannot be answered
        (no id to answer to)."""
        try:
            doc = _parse(payload)
        except _Invalid as err:
            logger.warning("a command on %s was refused: %s", verb, err.message)
            return None
        ident = doc["id"]
        try:
            result = await self._run(verb, doc)
        except _Invalid as err:
            result = _error("invalid_command", err.field, err.message)
        except PayloadError as err:
            result = _error("invalid_parameter", err.field, err.message)
        except WriteRefused as err:
            result = _error("write_refused", None, str(err))
        except ConnectorUnavailable as err:
            result = _error("device_unavailable", None, str(err))
        return json.dumps({"id": ident, "verb": verb, **result}).encode()

    async def _run(self, verb: str, doc: dict[str, Any]) -> dict[str, Any]:
        path = doc.get("path")
        if not isinstance(path, str) or not path:
            raise _Invalid("path", "`path` must name a tag")
        value = doc.get("value")
        if value is not None and not isinstance(value, bool | int | float | str):
            raise _Invalid("value", "`value` must be a number, true or false, or a string")
        if verb == "read":
            new = None if value is None else self._writer.check(path, value)
            old = await self._writer.read(path)
            return {"ok": True, "old": old, "new": new}
        if verb != "write":
            raise _Invalid(None, f"unknown command {verb!r} (read, write)")
        if value is None:
            raise _Invalid("value", "`value` is missing")
        expires = doc.get("expires_ns")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise _Invalid("expires_ns", "`expires_ns` (UTC nanoseconds) is missing")
        if self._clock.now_ns() > expires:
            return _error("command_expired", "expires_ns", "the command arrived too late")
        ident: str = doc["id"]
        if ident in self._seen:
            return _error("duplicate", "id", "this command was already carried out")
        self._seen[ident] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        checked: WriteValue = self._writer.check(path, value)
        old = await self._writer.read(path)
        new = await self._writer.write(path, checked)
        logger.info("wrote %r to %s for the platform (was %r, reads %r)", checked, path, old, new)
        return {"ok": True, "old": old, "requested": checked, "new": new}


def writables(writer: EquipmentWriter) -> bytes:
    """What the edge tells the platform it may command (JSON): the connectors that allow
    writes and their writable tags, in the fields of
    :class:`~shopfloor.model.control.WritableTag`."""
    tags = [
        {
            "path": t.path,
            "connector": t.connector,
            "data_type": t.data_type,
            "unit": t.unit,
            "eng_low": t.eng_low,
            "eng_high": t.eng_high,
            "states": [[k, v] for k, v in t.states],
        }
        for t in writer.targets()
    ]
    return json.dumps({"connectors": list(writer.connectors()), "tags": tags}).encode()


def _parse(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise _Invalid(None, f"more than {MAX_COMMAND_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except ValueError as err:
        raise _Invalid(None, f"not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise _Invalid(None, "not a JSON object")
    ident = doc.get("id")
    if not isinstance(ident, str) or not 0 < len(ident) <= 100:
        raise _Invalid("id", "`id` must be a string of 1 to 100 characters")
    return doc


def _error(code: str, field: str | None, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "field": field, "message": message}}
