"""Writes to equipment through the connectors an edge agent runs: check, write, read back.

This is the *how* of a write; the *whether* (enabled per connector, confirmed by an
operator, audited) is the platform's (:mod:`shopfloor.server.writes`). The platform
reaches it through the :class:`EquipmentWriter` methods only, typed with the value
types of :mod:`shopfloor.model.control`, so edge and server stay apart.

A value is checked against the tag's configuration before anything is sent, so a
refused value never reaches the device:

* the tag must be configured ``writable = true``;
* a flag takes ``true``/``false`` (or 0/1); an enumerated tag a state label or one of
  its numbers; a text tag a string that fits its ``length``; any other a finite number;
* a number must lie within ``eng_low`` … ``eng_high`` when the tag has a range, and,
  once its scaling is undone (``raw = (value - offset) / scale``), fit the wire type:
  inside the integer type's range and a whole multiple of the tag's resolution (a
  setpoint of 72.55 on a tag scaled by 0.1 is refused, not silently written as 72.6).

The value read back after a write is read from the device (the tag's poll group), in
engineering units, so the operator sees what the equipment holds, not what was asked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from shopfloor.config.connectors.base import TagConfig
from shopfloor.edge.agent import EdgeAgent
from shopfloor.edge.connectors.base import Pollable, Writable
from shopfloor.errors import PayloadError, WriteRefused
from shopfloor.model import is_good
from shopfloor.model.control import WritableTag, WriteValue

__all__ = ["EquipmentWriter", "check_value", "engineering"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INTEGERS = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})


def check_value(tag: TagConfig, value: WriteValue) -> WriteValue:
    """``value`` as the tag takes it and reads back (a state's number becomes its label,
    1 a flag's true).

    Raises:
        PayloadError: (field ``value``) it is of the wrong kind, outside the tag's range,
            or does not fit the tag's wire type once its scaling is undone.
    """
    name = tag.name
    if tag.data_type == "string":
        if not isinstance(value, str):
            raise PayloadError("value", f"tag {name} holds text: send a string")
        size = len(value.encode("latin-1", errors="replace"))
        if tag.length is not None and size > tag.length:
            raise PayloadError("value", f"text is {size} bytes, tag {name} holds {tag.length}")
        return value
    if tag.data_type == "bool" or tag.bit is not None:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise PayloadError("value", f"tag {name} is a flag: send true or false")
    if tag.states:  # the label is the canonical form, as the value reads back
        labels = {label: int(number) for number, label in tag.states.items()}
        if isinstance(value, str):
            if value not in labels:
                known = ", ".join(sorted(labels))
                raise PayloadError("value", f"tag {name} has no state {value!r} (it has {known})")
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if str(value) not in tag.states:
                raise PayloadError("value", f"tag {name} has no state numbered {value}")
            return tag.states[str(value)]
        raise PayloadError("value", f"tag {name} takes one of its state labels")
    if isinstance(value, bool | str):
        raise PayloadError("value", f"tag {name} takes a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise PayloadError("value", f"tag {name} takes a finite number")
    if tag.eng_low is not None and number < tag.eng_low:
        raise PayloadError("value", f"{value} is below the range of tag {name} ({tag.eng_low})")
    if tag.eng_high is not None and number > tag.eng_high:
        raise PayloadError("value", f"{value} is above the range of tag {name} ({tag.eng_high})")
    _check_raw(tag, number)
    return value


def _check_raw(tag: TagConfig, number: float) -> None:
    """Refuse a number whose raw value does not fit the tag's wire type."""
    if tag.scale == 0:
        raise PayloadError("value", f"tag {tag.name} has scale 0: it cannot be written")
    raw = (number - tag.offset) / tag.scale
    if tag.data_type in _INTEGERS:
        info = np.iinfo(np.dtype(tag.data_type))
        whole = round(raw)
        if not info.min <= whole <= info.max:
            raise PayloadError(
                "value",
                f"{number} is outside what tag {tag.name} can hold ({tag.data_type} raw "
                f"{info.min}…{info.max} × scale {tag.scale} + offset {tag.offset})",
            )
        if abs(raw - whole) > 1e-6 * max(1.0, abs(raw)):
            step = abs(tag.scale)
            raise PayloadError(
                "value",
                f"{number} is not a whole multiple of tag {tag.name}'s resolution {step:g}"
                f"{f' from {tag.offset:g}' if tag.offset else ''}",
            )
    elif tag.data_type == "float32" and abs(raw) > _FLOAT32_MAX:
        raise PayloadError("value", f"{number} does not fit tag {tag.name}'s float32")


def engineering(tag: TagConfig, raw: float, text: str | None) -> WriteValue | None:
    """A raw value read from the device as the operator writes it (the inverse of the
    checks above): a flag, a state label, text, or the scaled number; None when unknown."""
    if tag.data_type == "string":
        return text
    if math.isnan(raw):
        return None
    if tag.data_type == "bool" or tag.bit is not None:
        return bool(raw)
    if tag.states:
        return tag.states.get(str(int(raw)), int(raw))
    if tag.data_type == "float32":
        raw = float(f"{raw:.7g}")  # the float32's own digits, not its binary tail
    if tag.scale == 1 and tag.offset == 0:
        return int(raw) if tag.data_type in _INTEGERS else raw
    return float(f"{raw * tag.scale + tag.offset:.12g}")  # no binary tail from the scaling


class EquipmentWriter:
    """Writes through the connectors ``agent`` runs, on the agent's own connections.

    Args:
        agent: the edge agent whose connectors are written (its connection lock is
            shared, so a write never opens a second connection to a device).
    """

    def __init__(self, agent: EdgeAgent) -> None:
        self._agent = agent
        self._owner: dict[str, Writable] = {}
        self._allowed: list[str] = []
        for connector in agent.connectors:
            if isinstance(connector, Writable) and connector.allows_writes:
                self._allowed.append(connector.name)
                for meta in connector.tags():
                    self._owner[meta.path] = connector

    def connectors(self) -> Sequence[str]:
        """The names of the connectors that can write: a protocol that supports it, and
        ``allow_writes = true`` in their section (the lock of whoever runs them)."""
        return list(self._allowed)

    def target(self, path: str) -> WritableTag | None:
        """The tag at ``path`` of a connector that can write, or None."""
        found = self._config(path)
        if found is None:
            return None
        connector, tag = found
        return WritableTag(
            path=path,
            connector=connector.name,
            writable=tag.writable,
            data_type=tag.data_type,
            unit=tag.unit,
            eng_low=tag.eng_low,
            eng_high=tag.eng_high,
            states=tuple(sorted((int(k), v) for k, v in (tag.states or {}).items())),
        )

    def targets(self) -> list[WritableTag]:
        """Every tag configured ``writable = true`` of a connector that can write."""
        found = (self.target(path) for path in self._owner)
        return [t for t in found if t is not None and t.writable]

    def check(self, path: str, value: WriteValue) -> WriteValue:
        """``value`` as the tag takes it (see :func:`check_value`).

        Raises:
            PayloadError: ``path`` names no tag that can be written (field ``path``), or
                the value does not fit it (field ``value``).
        """
        found = self._config(path)
        if found is None:
            raise PayloadError("path", f"no connector that allows writes has a tag {path!r}")
        tag = found[1]
        if not tag.writable:
            raise PayloadError("path", f"tag {path} is read-only (not writable = true)")
        return check_value(tag, value)

    async def read(self, path: str) -> WriteValue | None:
        """The tag's present value, read from the device now (None: the read was Bad).

        Raises:
            PayloadError: no connector that can write has the tag (field ``path``).
            ConnectorUnavailable: the device does not answer.
        """
        found = self._config(path)
        if found is None:
            raise PayloadError("path", f"no connector that can write has a tag {path!r}")
        connector, tag = found
        live = await self._agent.connected(connector.name)
        if not isinstance(live, Pollable):
            return None  # a subscription's value is not read on demand
        group = next((g for g in live.groups() if path in g.paths), None)
        if group is None:
            return None
        batch = await live.read(group)
        paths = list(batch.paths())
        if path not in paths:
            return None
        i = paths.index(path)
        if not bool(is_good(batch.quality[i : i + 1])[0]):
            return None
        text = batch.text[i].as_py() if batch.text is not None else None
        return engineering(tag, float(batch.value[i]), text)

    async def write(self, path: str, value: WriteValue) -> WriteValue | None:
        """Check ``value``, write it and read it back; the value read back.

        Raises:
            PayloadError: the tag cannot be written or the value does not fit it.
            WriteRefused: the device refused the write.
            ConnectorUnavailable: the device does not answer.
        """
        checked = self.check(path, value)
        connector = self._owner[path]
        live = await self._agent.connected(connector.name)
        if not isinstance(live, Writable):  # pragma: no cover - the same object as above
            raise WriteRefused(f"{connector.name} cannot write")
        await live.write(path, checked)
        return await self.read(path)

    def _config(self, path: str) -> tuple[Writable, TagConfig] | None:
        connector = self._owner.get(path)
        if connector is None:
            return None
        tag = connector.tag_config(path)
        return None if tag is None else (connector, tag)
