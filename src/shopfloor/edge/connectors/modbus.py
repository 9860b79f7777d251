"""Modbus TCP and RTU: read registers, coils and inputs; write only tags marked writable.

Each poll group is planned once (:mod:`.modbus_plan`) into as few requests as the
protocol allows, then every poll sends those requests, drops each answer into one byte
buffer and decodes every tag of a layout with one numpy gather (:mod:`.registers`).

Failures are told apart as the platform needs them:

* no answer or a lost connection: the device is unavailable
  (:class:`~shopfloor.errors.ConnectorUnavailable`); the agent turns every tag of the
  group Bad and reconnects with backoff;
* a Modbus exception response or an answer of the wrong length: only the tags of that
  request turn Bad (an OPC UA code naming the reason), logged once when it starts and
  once when it clears; the other requests of the poll go on.

A request that reads through unused addresses (``max_gap``) and is refused with
"illegal data address" is split at its gaps for the rest of the connection's life, and
the poll is repeated at once, so a device that does not map every address still works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from shopfloor.config.connectors.base import ConnectorConfigBase
from shopfloor.config.connectors.modbus import (
    ModbusConnectorConfig,
    ModbusTagConfig,
    Table,
)
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.connectors.configured import ConfiguredDescription, ConfiguredTags
from shopfloor.edge.connectors.modbus_plan import Block, Span, coalesce
from shopfloor.edge.connectors.registers import (
    Layout,
    ProblemLog,
    bytes_to_registers,
    decode,
    decode_strings,
    encode,
    register_count,
    registers_to_bytes,
    value_size,
)
from shopfloor.errors import ConfigError, ConnectorUnavailable, WriteRefused
from shopfloor.model import PointBatch, Quality
from shopfloor.runtime.clock import Clock, SystemClock

logger = logging.getLogger(__name__)


EXCEPTION_QUALITY: dict[int, int] = {
    1: Quality.BAD_NOT_SUPPORTED,  # illegal function
    2: Quality.BAD_OUT_OF_RANGE,  # illegal data address
    3: Quality.BAD_OUT_OF_RANGE,  # illegal data value
    4: Quality.BAD_DEVICE_FAILURE,  # server device failure
    5: Quality.BAD_RESOURCE_UNAVAILABLE,  # acknowledge (busy with a long command)
    6: Quality.BAD_RESOURCE_UNAVAILABLE,  # server device busy
    7: Quality.BAD_RESOURCE_UNAVAILABLE,  # negative acknowledge
    8: Quality.BAD_DEVICE_FAILURE,  # memory parity error
    10: Quality.BAD_NO_COMMUNICATION,  # gateway path unavailable
    11: Quality.BAD_NO_COMMUNICATION,  # gateway target failed to respond
}
"""OPC UA status code given to the tags of a request answered with a Modbus exception."""

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_ILLEGAL_ADDRESS = 2
_MALFORMED = 0xFF  # private exception code: the answer could not be parsed
_BITS_PER_REGISTER = 16
_Key = tuple[int, Table]


@dataclass(slots=True)
class _Request:
    """One planned request and where its answer goes."""

    unit: int
    table: Table
    start: int
    count: int
    base: int  # first byte (registers) or bit (coils, inputs) of its answer in the buffer
    members: npt.NDArray[np.intp]  # tag indices (within the group) it carries
    gapped: bool

    @property
    def key(self) -> tuple[int, Table, int, int]:
        return (self.unit, self.table, self.start, self.count)

    def describe(self) -> str:
        return f"unit {self.unit} {self.table.value}:{self.start}+{self.count}"


@dataclass(slots=True)
class _GroupPlan:
    """A poll group compiled into requests and vectorised decoding steps."""

    paths: tuple[str, ...]
    requests: list[_Request]
    nbytes: int
    nbits: int
    numeric: list[tuple[Layout, npt.NDArray[np.intp], npt.NDArray[np.intp]]]
    bit_tags: npt.NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))
    bit_offsets: npt.NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))
    strings: list[tuple[int, int, int, str]] = field(default_factory=list)
    request_of_tag: npt.NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))


def _layout(tag: ModbusTagConfig) -> Layout:
    size = value_size(tag.data_type, length=tag.length)
    return Layout(tag.data_type, size, tag.byte_order, tag.word_order, tag.bit)


def compile_group(
    tags: Sequence[ModbusTagConfig],
    *,
    default_unit: int,
    max_gap: int,
    max_registers: int,
    max_bits: int,
    gapless: frozenset[_Key] = frozenset(),
) -> _GroupPlan:
    """Plan the requests of one poll group and how to decode their answers.

    Args:
        tags: the group's tags, in the order of its paths.
        default_unit: unit id of tags that name none.
        max_gap: most unused addresses a request reads to join two values.
        max_registers: most registers per request.
        max_bits: most coils or inputs per request.
        gapless: (unit, table) pairs the device refused gaps for; planned with no gap.
    """
    keys: list[_Key] = []
    spans: list[Span] = []
    for tag in tags:
        where = tag.location
        key = (default_unit if tag.unit_id is None else tag.unit_id, where.table)
        size = 1 if where.table.is_bits else register_count(tag.data_type, length=tag.length)
        keys.append(key)
        spans.append(Span(key, where.offset, size))
    limits: dict[Hashable, int] = {
        k: max_bits if k[1].is_bits else max_registers for k in set(keys)
    }
    strict = [i for i, s in enumerate(spans) if s.key in gapless]
    loose = [i for i, s in enumerate(spans) if s.key not in gapless]
    blocks: list[tuple[Block, list[int]]] = []
    for chosen, gap in ((loose, max_gap), (strict, 0)):
        sub = [spans[i] for i in chosen]
        for b in coalesce(sub, max_gap=gap, max_span=limits):
            blocks.append((b, [chosen[m] for m in b.members]))
    requests: list[_Request] = []
    nbytes = nbits = 0
    tag_pos = np.zeros(len(tags), dtype=np.intp)  # byte or bit position of each tag's value
    for block, members in blocks:
        unit, table = keys[members[0]]
        base = nbits if table.is_bits else nbytes
        step = 1 if table.is_bits else 2
        for m in members:
            tag_pos[m] = base + (spans[m].start - block.start) * step
        remapped = Block(block.key, block.start, block.count, tuple(members))
        requests.append(
            _Request(
                unit=unit,
                table=table,
                start=block.start,
                count=block.count,
                base=base,
                members=np.asarray(members, dtype=np.intp),
                gapped=remapped.has_gaps(spans),
            )
        )
        if table.is_bits:
            nbits += block.count
        else:
            nbytes += 2 * block.count
    numeric: dict[Layout, list[int]] = {}
    bit_tags: list[int] = []
    strings: list[tuple[int, int, int, str]] = []
    for i, tag in enumerate(tags):
        if tag.location.table.is_bits:
            bit_tags.append(i)
        elif tag.data_type == "string":
            strings.append((i, int(tag_pos[i]), int(tag.length or 0), tag.byte_order))
        else:
            numeric.setdefault(_layout(tag), []).append(i)
    bit_idx = np.asarray(bit_tags, dtype=np.intp)
    request_of_tag = np.zeros(len(tags), dtype=np.intp)
    for r, req in enumerate(requests):
        request_of_tag[req.members] = r
    return _GroupPlan(
        paths=(),
        requests=requests,
        nbytes=nbytes,
        nbits=nbits,
        numeric=[
            (layout, np.asarray(ix, dtype=np.intp), tag_pos[np.asarray(ix, dtype=np.intp)])
            for layout, ix in numeric.items()
        ],
        bit_tags=bit_idx,
        bit_offsets=tag_pos[bit_idx],
        strings=strings,
        request_of_tag=request_of_tag,
    )


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    """A gapped request was refused: re-plan without gaps and read again."""

    def __init__(self, key: _Key) -> None:
        self.key = key


class ModbusConnector(ConfiguredDescription):
    """Polls a Modbus TCP device or an RTU serial line.

    Args:
        config: the connector's section of the configuration.
        clock: source of the timestamps (injected by tests).
    """

    def __init__(self, config: ModbusConnectorConfig, *, clock: Clock | None = None) -> None:
        self.name = config.name
        self.kind = "modbus"
        self.config = config
        self._clock = clock or SystemClock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._problems = ProblemLog(logger, config.name)
        self._configured = ConfiguredTags.build(config, config.tags)
        self._by_path = self._configured.by_path
        self._groups = self._configured.groups
        self._group_tags = self._configured.group_tags
        self._gapless: set[_Key] = set()
        self._plans: dict[str, _GroupPlan] = {}
        for group in self._groups:
            self._plans[group.name] = self._compile(group)
        self.requests_sent = 0
        self._last_function = 3
        self._malformed = ""

    @classmethod
    def from_config(cls, config: ConnectorConfigBase) -> Self:
        """Build the connector from its configuration section."""
        if not isinstance(config, ModbusConnectorConfig):
            raise ConfigError(f"connector {config.name}: expected a modbus section")
        return cls(config)

    # ------------------------------------------------------------ description
    def plan(self, group: PollGroup) -> list[tuple[int, str, int, int]]:
        """The requests a poll of ``group`` sends: ``(unit, table, start, count)`` each."""
        return [(r.unit, r.table.value, r.start, r.count) for r in self._plans[group.name].requests]

    def _compile(self, group: PollGroup) -> _GroupPlan:
        cfg = self.config
        try:
            plan = compile_group(
                self._group_tags[group.name],
                default_unit=cfg.unit_id,
                max_gap=cfg.max_gap,
                max_registers=cfg.max_registers,
                max_bits=cfg.max_bits,
                gapless=frozenset(self._gapless),
            )
        except ValueError as err:
            raise ConfigError(f"connector {cfg.name}: {err}") from err
        plan.paths = group.paths
        return plan

    # ------------------------------------------------------------ connection
    async def connect(self) -> None:
        """Open the TCP connection or the serial port."""
        await self.close()
        cfg = self.config
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if cfg.transport == "rtu":
            client = AsyncModbusSerialClient(
                str(cfg.serial_port),
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=cfg.timeout_s,
                retries=cfg.retries,
                reconnect_delay=0,  # the agent owns reconnection (one retry loop)
                trace_connect=self._on_connection,
            )
        else:
            client = AsyncModbusTcpClient(
                str(cfg.host),
                port=cfg.port,
                timeout=cfg.timeout_s,
                retries=cfg.retries,
                reconnect_delay=0,
                trace_connect=self._on_connection,
                trace_packet=self._inspect,
            )
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as err:
            client.close()
            raise ConnectorUnavailable(f"{cfg.endpoint}: {err}") from err
        if not ok:
            client.close()
            raise ConnectorUnavailable(f"{cfg.endpoint}: cannot connect")
        self._client = client

    def _on_connection(self, up: bool) -> None:
        """Fail the request in flight at once when the peer closes the connection.

        Without this, pymodbus would wait for the whole timeout before noticing.
        """
        if up or self._client is None:
            return
        future = getattr(getattr(self._client, "ctx", None), "response_future", None)
        if isinstance(future, asyncio.Future) and not future.done():
            future.set_exception(ConnectionException("connection closed by the device"))

    def _inspect(self, sending: bool, data: bytes) -> bytes:
        """Turn a malformed TCP answer into a private exception response for its request.

        pymodbus drops the connection when it cannot parse a frame; the MBAP header still
        tells where the frame ends, so the stream stays in step and only the tags of that
        request need to turn Bad. The frame keeps its length (the library cuts by it).
        """
        if sending:
            if len(data) > 7:
                self._last_function = data[7]
            return data
        out: bytearray | None = None
        at = 0
        while len(data) - at >= 9:
            length = int.from_bytes(data[at + 4 : at + 6], "big")
            end = at + 6 + length
            if end > len(data) or length < 3:
                break
            function = data[at + 7]
            # the common case, a well-formed register answer, costs two comparisons
            if not (function in (3, 4) and data[at + 8] == length - 3 and length % 2):
                reason = _malformed(data[at + 7 : end])
                if reason:
                    self._malformed = reason
                    out = bytearray(data) if out is None else out
                    out[at + 7] = (self._last_function & 0x7F) | 0x80
                    out[at + 8] = _MALFORMED
            at = end
        return data if out is None else bytes(out)

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ---------------------------------------------------------------- reading
    async def read(self, group: PollGroup) -> PointBatch:
        """Read one poll group; raw values, Bad per request on a refused or malformed answer.

        Raises:
            ConnectorUnavailable: the device does not answer or the connection is lost.
        """
        try:
            return await self._read(group)
        except _Refused as refused:
            unit, table = refused.key
            logger.warning(
                "%s: unit %s refused a read through unused %s addresses; reading them "
                "without gaps from now on",
                self.name,
                unit,
                table.value,
            )
            self._gapless.add(refused.key)
            for g in self._groups:
                self._plans[g.name] = self._compile(g)
            return await self._read(group)

    async def _read(self, group: PollGroup) -> PointBatch:
        plan = self._plans[group.name]
        n = len(plan.paths)
        words: list[int] = []  # register answers in request order: the buffer's layout
        flags: list[int] = []
        times: list[int] = []
        codes: list[int] = []
        for req in plan.requests:
            answer = await self._execute(req)
            times.append(self._clock.now_ns())
            if isinstance(answer, tuple):
                code, reason = answer
                codes.append(code)
                self._problems.problem(req.key, req.describe(), reason)
                answer = [0] * req.count
            else:
                codes.append(0)
                if self._problems.failing:
                    self._problems.ok(req.key, req.describe())
            if req.table.is_bits:
                flags.extend(answer[: req.count])
            else:
                words.extend(answer)
        buf = registers_to_bytes(words)
        ts = np.asarray(times, dtype=np.int64)[plan.request_of_tag]
        quality = np.asarray(codes, dtype=np.uint32)[plan.request_of_tag]
        value = np.full(n, np.nan)
        for layout, idx, offsets in plan.numeric:
            value[idx] = decode(buf, offsets, layout)
        if len(plan.bit_tags):
            value[plan.bit_tags] = np.asarray(flags, dtype=np.float64)[plan.bit_offsets]
        text: list[str | None] | None = None
        if plan.strings:
            text = [None] * n
            for i, offset, length, order in plan.strings:
                if quality[i] == 0:
                    text[i] = decode_strings(buf, [offset], length, byte_order=order)[0]
        value[quality != 0] = np.nan
        return PointBatch.from_columns(plan.paths, np.arange(n), ts, value, quality, text=text)

    async def _execute(self, req: _Request) -> list[int] | list[bool] | tuple[int, str]:
        """Send one read; its payload, or ``(quality, reason)`` when it is refused or malformed."""
        client = self._client
        if client is None or not client.connected:
            raise ConnectorUnavailable(f"{self.config.endpoint}: not connected")
        table = req.table
        if table is Table.HOLDING:
            call = client.read_holding_registers
        elif table is Table.INPUT:
            call = client.read_input_registers
        elif table is Table.COIL:
            call = client.read_coils
        else:
            call = client.read_discrete_inputs
        self.requests_sent += 1
        response = await self._call(call, req.start, count=req.count, device_id=req.unit)
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            if code == _ILLEGAL_ADDRESS and req.gapped:
                raise _Refused((req.unit, req.table))
            if code == _MALFORMED:
                return Quality.BAD_DECODING_ERROR, f"malformed answer: {self._malformed}"
            name = _EXCEPTION_NAMES.get(code, "unknown")
            return EXCEPTION_QUALITY.get(code, Quality.BAD), f"exception {code} ({name})"
        if req.table.is_bits:
            got_bits: list[bool] = list(response.bits)
            if len(got_bits) != -(-req.count // 8) * 8:
                return Quality.BAD_DECODING_ERROR, (
                    f"answered {len(got_bits)} bits for {req.count} requested"
                )
            return got_bits
        registers: list[int] = list(response.registers)
        if len(registers) != req.count:
            return Quality.BAD_DECODING_ERROR, (
                f"answered {len(registers)} registers for {req.count} requested"
            )
        return registers

    async def _call(self, call: Any, *args: Any, **kwargs: Any) -> ModbusPDU:
        """Run a pymodbus request, translating its exceptions at the boundary."""
        endpoint = self.config.endpoint
        try:
            response: ModbusPDU = await call(*args, **kwargs)
        except ModbusIOException as err:  # no answer within timeout × (retries + 1)
            raise ConnectorUnavailable(f"{endpoint}: no answer ({err})") from err
        except ConnectionException as err:
            raise ConnectorUnavailable(f"{endpoint}: connection lost ({err})") from err
        except ModbusException as err:
            raise ConnectorUnavailable(f"{endpoint}: {err}") from err
        except (OSError, TimeoutError) as err:
            raise ConnectorUnavailable(f"{endpoint}: {err}") from err
        return response

    # ---------------------------------------------------------------- writing
    async def write(self, path: str, value: float | int | bool | str) -> None:
        """Write ``value`` (in engineering units, or a state label) to a writable tag.

        The tag's scale and offset are undone and integers rounded before the value is
        encoded in the tag's type and orders. Coils use function 5, one register
        function 6, wider values function 16.

        Raises:
            ConnectorError: the tag is unknown or not ``writable = true``, the value does
                not fit its type, or the device answered with an exception.
            ConnectorUnavailable: the device does not answer.
        """
        tag = self._by_path.get(path)
        if tag is None:
            raise WriteRefused(f"{self.name}: no tag {path!r}")
        if not tag.writable:
            raise WriteRefused(f"{self.name}: tag {path} is read-only (set writable = true)")
        client = self._client
        if client is None or not client.connected:
            raise ConnectorUnavailable(f"{self.config.endpoint}: not connected")
        raw = _raw_value(tag, value)
        where = tag.location
        unit = self.config.unit_id if tag.unit_id is None else tag.unit_id
        if where.table is Table.COIL:
            response = await self._call(client.write_coil, where.offset, bool(raw), device_id=unit)
        else:
            try:
                words = bytes_to_registers(encode(raw, _layout(tag)))
            except ValueError as err:
                raise WriteRefused(f"{self.name}: cannot write {value!r} to {path}: {err}") from err
            if len(words) == 1:
                response = await self._call(
                    client.write_register, where.offset, words[0], device_id=unit
                )
            else:
                response = await self._call(
                    client.write_registers, where.offset, words, device_id=unit
                )
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = _EXCEPTION_NAMES.get(code, "unknown")
            raise WriteRefused(f"{self.name}: write to {path} refused: exception {code} ({name})")
        logger.info("%s: wrote %r to %s", self.name, value, path)


def _malformed(pdu: bytes) -> str:
    """Why a response PDU cannot be parsed, or "" when it can."""
    function = pdu[0]
    if function > 0x80:
        return ""
    if function in (1, 2, 3, 4):
        count = pdu[1]
        if count != len(pdu) - 2:
            return f"byte count {count} but {len(pdu) - 2} bytes follow"
        if function in (3, 4) and count % 2:
            return f"odd byte count {count} for 16-bit registers"
        return ""
    if function in (5, 6, 15, 16):
        return "" if len(pdu) == 5 else f"write echo of {len(pdu)} bytes, not 5"
    return f"unexpected function code {function}"


def _raw_value(tag: ModbusTagConfig, value: float | int | bool | str) -> float | int | bool | str:
    """Undo the sampler's mapping: a state label to its number, engineering to raw units."""
    if tag.data_type == "string":
        return str(value)
    if isinstance(value, str):
        if not tag.states:
            raise WriteRefused(f"tag {tag.name} takes a number, not {value!r}")
        for number, label in tag.states.items():
            if label == value:
                return int(number)
        raise WriteRefused(f"tag {tag.name} has no state {value!r}")
    if isinstance(value, bool) or tag.data_type == "bool":
        return bool(value)
    if tag.scale == 0:
        raise WriteRefused(f"tag {tag.name} has scale 0: its raw value cannot be recovered")
    return (float(value) - tag.offset) / tag.scale
