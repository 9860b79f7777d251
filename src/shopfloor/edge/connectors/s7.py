"""Siemens S7: read data blocks, merkers, inputs and outputs over ISO-on-TCP (python-snap7).

Tags of one poll group are joined per area and data block into byte ranges no larger
than the PDU the PLC negotiated (:func:`.modbus_plan.coalesce`), each read with one
request, and decoded with one numpy gather per layout (:mod:`.registers`).

A PLC that does not answer or drops the connection makes the connector unavailable
(:class:`~shopfloor.errors.ConnectorUnavailable`); an item the PLC refuses (a data block
that does not exist, a range past its end) or an answer of the wrong size turns only
the tags of that request Bad, logged once when it starts and once when it clears. A
STRING whose header claims more characters than it can hold is Bad on its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
from snap7 import AsyncClient
from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError
from snap7.type import Area

from shopfloor.config.connectors.base import ConnectorConfigBase
from shopfloor.config.connectors.s7 import S7ConnectorConfig, S7TagConfig
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.connectors.configured import ConfiguredDescription, ConfiguredTags
from shopfloor.edge.connectors.modbus_plan import Span, coalesce
from shopfloor.edge.connectors.registers import Layout, ProblemLog, encode
from shopfloor.edge.connectors.registers import decode as decode_values
from shopfloor.errors import ConfigError, ConnectorUnavailable, WriteRefused
from shopfloor.model import PointBatch, Quality
from shopfloor.runtime.clock import Clock, SystemClock

logger = logging.getLogger(__name__)


_AREAS = {"DB": Area.DB, "I": Area.PE, "Q": Area.PA, "M": Area.MK}
_RETURN_CODE = re.compile(r"\(0x([0-9a-fA-F]{2})\)")
_ITEM_QUALITY = {
    0x05: Quality.BAD_OUT_OF_RANGE,
    0x0A: Quality.BAD_NOT_FOUND,
    0x03: Quality.BAD_NOT_READABLE,
}
_READ_OVERHEAD = 18  # S7 header, read parameters and item header around the data
_SMALLEST_PDU = 240


@dataclass(slots=True)
class _Read:
    area: str
    db: int
    start: int
    count: int
    base: int
    members: npt.NDArray[np.intp]

    def describe(self) -> str:
        where = f"DB{self.db}" if self.area == "DB" else self.area
        return f"{where} bytes {self.start}…{self.start + self.count - 1}"


@dataclass(slots=True)
class _Plan:
    paths: tuple[str, ...]
    reads: list[_Read]
    nbytes: int
    numeric: list[tuple[Layout, npt.NDArray[np.intp], npt.NDArray[np.intp]]]
    strings: list[tuple[int, int, int]]  # tag index, offset of the header, declared length


def _layout(tag: S7TagConfig) -> Layout:
    where = tag.location
    bit = where.bit if where.width == "X" else tag.bit
    return Layout(tag.data_type, where.size, tag.byte_order, tag.word_order, bit)


def compile_s7_group(
    tags: Sequence[S7TagConfig], paths: tuple[str, ...], *, max_gap: int, max_bytes: int
) -> _Plan:
    """Plan the reads of one poll group (pure; ``max_bytes`` from the negotiated PDU)."""
    spans = [Span((t.location.area, t.location.db), t.location.byte, t.location.size) for t in tags]
    reads: list[_Read] = []
    pos = np.zeros(len(tags), dtype=np.intp)
    nbytes = 0
    for block in coalesce(spans, max_gap=max_gap, max_span=max_bytes):
        first = tags[block.members[0]].location
        area, db = first.area, first.db
        for m in block.members:
            pos[m] = nbytes + spans[m].start - block.start
        members = np.asarray(block.members, dtype=np.intp)
        reads.append(_Read(area, db, block.start, block.count, nbytes, members))
        nbytes += block.count
    numeric: dict[Layout, list[int]] = {}
    strings: list[tuple[int, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.data_type == "string":
            strings.append((i, int(pos[i]), tag.location.max_length))
        else:
            numeric.setdefault(_layout(tag), []).append(i)
    return _Plan(
        paths=paths,
        reads=reads,
        nbytes=nbytes,
        numeric=[
            (layout, np.asarray(ix, dtype=np.intp), pos[np.asarray(ix, dtype=np.intp)])
            for layout, ix in numeric.items()
        ],
        strings=strings,
    )


class S7Connector(ConfiguredDescription):
    """Polls a Siemens S7 PLC.

    Args:
        config: the connector's section of the configuration.
        clock: source of the timestamps (injected by tests).
    """

    def __init__(self, config: S7ConnectorConfig, *, clock: Clock | None = None) -> None:
        self.name = config.name
        self.kind = "s7"
        self.config = config
        self._clock = clock or SystemClock()
        self._client: AsyncClient | None = None
        self._problems = ProblemLog(logger, config.name)
        self._configured = ConfiguredTags.build(config, config.tags)
        self._by_path = self._configured.by_path
        self._groups = self._configured.groups
        self._group_tags = self._configured.group_tags
        self._max_bytes = _SMALLEST_PDU - _READ_OVERHEAD
        self._plans = {g.name: self._compile(g) for g in self._groups}

    @classmethod
    def from_config(cls, config: ConnectorConfigBase) -> Self:
        """Build the connector from its configuration section."""
        if not isinstance(config, S7ConnectorConfig):
            raise ConfigError(f"connector {config.name}: expected an s7 section")
        return cls(config)

    def plan(self, group: PollGroup) -> list[tuple[str, int, int, int]]:
        """The reads a poll of ``group`` sends: ``(area, db, start, bytes)`` each."""
        return [(r.area, r.db, r.start, r.count) for r in self._plans[group.name].reads]

    def _compile(self, group: PollGroup) -> _Plan:
        try:
            return compile_s7_group(
                self._group_tags[group.name],
                group.paths,
                max_gap=self.config.max_gap,
                max_bytes=self._max_bytes,
            )
        except ValueError as err:
            raise ConfigError(f"connector {self.name}: {err}") from err

    # ------------------------------------------------------------ connection
    async def connect(self) -> None:
        """Connect and plan reads to fit the PDU the PLC negotiated."""
        await self.close()
        cfg = self.config
        client = AsyncClient()
        try:
            await asyncio.wait_for(
                client.connect(cfg.host, cfg.rack, cfg.slot, tcp_port=cfg.port), cfg.timeout_s
            )
        except (S7Error, OSError, TimeoutError) as err:
            await _quietly_disconnect(client)
            raise ConnectorUnavailable(f"{cfg.endpoint}: {err or type(err).__name__}") from err
        if client.connection is not None:
            client.connection.timeout = cfg.timeout_s  # per receive; the library's default is 5 s
        self._client = client
        max_bytes = max(_SMALLEST_PDU, client.pdu_length) - _READ_OVERHEAD
        if max_bytes != self._max_bytes:
            self._max_bytes = max_bytes
            self._plans = {g.name: self._compile(g) for g in self._groups}

    async def close(self) -> None:
        """Disconnect. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await _quietly_disconnect(client)

    # ---------------------------------------------------------------- reading
    async def read(self, group: PollGroup) -> PointBatch:
        """Read one poll group; raw values, Bad per read the PLC refuses.

        Raises:
            ConnectorUnavailable: the PLC does not answer or the connection is lost.
        """
        plan = self._plans[group.name]
        n = len(plan.paths)
        buf = np.zeros(plan.nbytes, dtype=np.uint8)
        quality = np.zeros(n, dtype=np.uint32)
        ts = np.empty(n, dtype=np.int64)
        for r in plan.reads:
            data = await self._read_area(r)
            ts[r.members] = self._clock.now_ns()
            key = (r.area, r.db, r.start, r.count)
            if isinstance(data, tuple):
                quality[r.members] = data[0]
                self._problems.problem(key, r.describe(), data[1])
                continue
            if self._problems.failing:
                self._problems.ok(key, r.describe())
            buf[r.base : r.base + r.count] = np.frombuffer(bytes(data), dtype=np.uint8)
        value = np.full(n, np.nan)
        for layout, idx, offsets in plan.numeric:
            value[idx] = decode_values(buf, offsets, layout)
        text: list[str | None] | None = None
        if plan.strings:
            text = [None] * n
            for i, offset, declared in plan.strings:
                if quality[i] == 0:
                    text[i] = self._string(plan.paths[i], buf, offset, declared=declared)
                    if text[i] is None:
                        quality[i] = Quality.BAD_DECODING_ERROR
        value[quality != 0] = np.nan
        return PointBatch.from_columns(plan.paths, np.arange(n), ts, value, quality, text=text)

    def _string(
        self, path: str, buf: npt.NDArray[np.uint8], offset: int, *, declared: int
    ) -> str | None:
        """An S7 STRING (max length byte, actual length byte, characters); None if malformed."""
        capacity, used = int(buf[offset]), int(buf[offset + 1])
        if used > min(capacity, declared):
            self._problems.problem(
                path, path, f"STRING header claims {used} characters, holds {declared}"
            )
            return None
        self._problems.ok(path, path)
        raw = buf[offset + 2 : offset + 2 + used].tobytes()
        return raw.decode("latin-1")

    async def _read_area(self, r: _Read) -> bytearray | tuple[int, str]:
        client = self._client
        if client is None or not client.get_connected():
            raise ConnectorUnavailable(f"{self.config.endpoint}: not connected")
        try:
            data = await client.read_area(_AREAS[r.area], r.db, r.start, r.count)
        except (S7ConnectionError, S7TimeoutError, OSError, TimeoutError) as err:
            raise ConnectorUnavailable(f"{self.config.endpoint}: {err}") from err
        except S7ProtocolError as err:
            if not client.get_connected():
                raise ConnectorUnavailable(f"{self.config.endpoint}: {err}") from err
            match = _RETURN_CODE.search(str(err))
            code = int(match.group(1), 16) if match else -1
            return _ITEM_QUALITY.get(code, Quality.BAD_DECODING_ERROR), str(err)
        if len(data) != r.count:
            return Quality.BAD_DECODING_ERROR, f"answered {len(data)} bytes for {r.count}"
        return data

    # ---------------------------------------------------------------- writing
    async def write(self, path: str, value: float | int | bool | str) -> None:
        """Write ``value`` (engineering units, or a state label) to a writable tag.

        Raises:
            ConnectorError: the tag is unknown or not ``writable = true``, the value does
                not fit, or the PLC refused the write.
            ConnectorUnavailable: the PLC does not answer.
        """
        tag = self._by_path.get(path)
        if tag is None:
            raise WriteRefused(f"{self.name}: no tag {path!r}")
        if not tag.writable:
            raise WriteRefused(f"{self.name}: tag {path} is read-only (set writable = true)")
        client = self._client
        if client is None or not client.get_connected():
            raise ConnectorUnavailable(f"{self.config.endpoint}: not connected")
        where = tag.location
        try:
            if tag.data_type == "string":
                text = str(value).encode("latin-1", errors="replace")
                if len(text) > where.max_length:
                    raise ValueError(
                        f"text is {len(text)} bytes, the STRING holds {where.max_length}"
                    )
                data = bytes([where.max_length, len(text)]) + text
            else:
                data = encode(_raw(tag, value), _layout(tag))
        except ValueError as err:
            raise WriteRefused(f"{self.name}: cannot write {value!r} to {path}: {err}") from err
        try:
            await client.write_area(_AREAS[where.area], where.db, where.byte, bytearray(data))
        except (S7ConnectionError, S7TimeoutError, OSError, TimeoutError) as err:
            raise ConnectorUnavailable(f"{self.config.endpoint}: {err}") from err
        except S7Error as err:
            raise WriteRefused(f"{self.name}: write to {path} refused: {err}") from err
        logger.info("%s: wrote %r to %s", self.name, value, path)


def _raw(tag: S7TagConfig, value: float | int | bool | str) -> float | int | bool:
    if isinstance(value, str):
        for number, label in (tag.states or {}).items():
            if label == value:
                return int(number)
        raise ValueError(f"tag {tag.name} has no state {value!r}")
    if isinstance(value, bool):
        return value
    if tag.scale == 0:
        raise ValueError("scale 0: the raw value cannot be recovered")
    return (float(value) - tag.offset) / tag.scale


async def _quietly_disconnect(client: AsyncClient) -> None:
    try:
        await client.disconnect()
    except (S7Error, OSError):
        logger.debug("disconnect failed", exc_info=True)
