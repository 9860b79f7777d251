"""Import an OPC UA server's address space as tag configurations, fast.

Tools that walk an address space node by node (children, then browse name, then data
type, each a round trip) take minutes for a few thousand variables. This walk is
breadth-first and batched: one Browse request per level for every node of that level
(continuation points followed with BrowseNext), then one Read request per thousand
attributes for every variable's DataType, ValueRank, Description and its EURange and
EngineeringUnits properties. A 5,000-variable server takes a handful of round trips.

Paths are built from browse names, each made a valid path segment (``Line1`` →
``line1``, ``SpindleSpeed`` → ``spindle_speed``). Only scalar numbers, booleans and
strings are imported; arrays and other types are skipped and counted in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from shopfloor.config.connectors.base import DataTypeName
from shopfloor.config.connectors.opcua import OpcUaConnectorConfig, OpcUaTagConfig
from shopfloor.edge.connectors.opcua_security import (
    close_client,
    node_id,
    open_client,
    translate,
)
from shopfloor.errors import ConfigError, ConnectorError

__all__ = ["browse", "path_segment", "render_toml"]

logger = logging.getLogger(__name__)

_HIERARCHICAL = node_id(ObjectIds.HierarchicalReferences)
_HAS_PROPERTY = node_id(ObjectIds.HasProperty)
_HAS_SUBTYPE = node_id(ObjectIds.HasSubtype)
_HAS_CHILD = node_id(ObjectIds.HasChild)
# what a walk needs of each reference: less to encode and decode than BrowseResultMask.All
_RESULT_MASK = (
    ua.BrowseResultMask.ReferenceTypeId
    | ua.BrowseResultMask.NodeClass
    | ua.BrowseResultMask.BrowseName
)

# Built-in DataTypes (namespace 0) and how shopfloor types them; None: not a point.
_BUILTIN: dict[int, DataTypeName | None] = {
    1: "bool",
    2: "int16",  # SByte
    3: "uint16",  # Byte
    4: "int16",
    5: "uint16",
    6: "int32",
    7: "uint32",
    8: "int64",
    9: "uint64",
    10: "float32",
    11: "float64",
    12: "string",
    13: None,  # DateTime
    14: None,  # Guid
    15: None,  # ByteString
    16: None,  # XmlElement
    17: None,  # NodeId
    18: None,  # ExpandedNodeId
    19: None,  # StatusCode
    20: None,  # QualifiedName
    21: "string",  # LocalizedText
    22: None,  # Structure
    23: None,  # DataValue
    24: None,  # BaseDataType: any type at all
    25: None,  # DiagnosticInfo
    26: "float64",  # Number
    27: "int64",  # Integer
    28: "uint64",  # UInteger
    29: "int32",  # Enumeration
}
_UNSUPPORTED_NAMES = {
    13: "DateTime",
    14: "Guid",
    15: "ByteString",
    16: "XmlElement",
    17: "NodeId",
    18: "ExpandedNodeId",
    19: "StatusCode",
    20: "QualifiedName",
    22: "Structure",
    23: "DataValue",
    24: "BaseDataType",
    25: "DiagnosticInfo",
}
_READ_ATTRIBUTES = (
    AttributeIds.DataType,
    AttributeIds.ValueRank,
    AttributeIds.Description,
)


def path_segment(name: str) -> str:
    """Make a browse name a path segment: ASCII lower case, words joined by underscores.

    Letters, digits and hyphens are kept; camel case is split into words.

    >>> path_segment("Line1.SpindleSpeed")
    'line1_spindle_speed'
    >>> path_segment("EURange")
    'eu_range'
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    return re.sub(r"[^a-z0-9-]+", "_", text.lower()).strip("_-")


@dataclass(slots=True)
class _Variable:
    node: ua.NodeId
    segments: tuple[str, ...]
    properties: dict[str, ua.NodeId] = field(default_factory=dict)


@dataclass(slots=True)
class _Walk:
    """What a walk found, and how much it left out."""

    variables: list[_Variable] = field(default_factory=list)
    visited: int = 0
    truncated: bool = False
    skipped: Counter[str] = field(default_factory=Counter)


async def browse(
    endpoint: str,
    *,
    root: str = "i=85",
    connection: OpcUaConnectorConfig | None = None,
    allow_insecure: bool = False,
    max_depth: int = 16,
    max_nodes: int = 100_000,
    include_standard: bool = False,
    namespace_uris: bool = False,
    asset: str = "",
) -> list[OpcUaTagConfig]:
    """Walk the variables under ``root`` and return one tag configuration per variable.

    Args:
        endpoint: the server, e.g. ``opc.tcp://plc-7:4840``.
        root: NodeId to start from; default the Objects folder.
        connection: security and credentials (its endpoint and tags are ignored); default
            an anonymous session without security, which needs ``allow_insecure``.
        allow_insecure: allow the default unsecured session.
        max_depth: deepest level of nodes to import (the children of ``root`` are level 1).
        max_nodes: stop after visiting this many nodes (logged when it happens).
        include_standard: also walk namespace 0 (the server's own diagnostics).
        namespace_uris: write addresses as ``nsu=<uri>;…``, which survive a server that
            renumbers its namespaces; default ``ns=<index>;…``.
        asset: the asset path the connector will use; tag paths are built under it.

    Raises:
        ConfigError: no connection settings and ``allow_insecure`` not set.
        ConnectorUnavailable: the server does not answer.
        ConnectorError: the server is untrusted or refuses the session.
    """
    if connection is None:
        if not allow_insecure:
            raise ConfigError(
                "browsing without security needs allow_insecure (or connection settings)"
            )
        config = OpcUaConnectorConfig(
            name="browse", endpoint=endpoint, security_policy="None", allow_insecure=True
        )
    else:
        config = connection.model_copy(update={"endpoint": endpoint, "tags": []})
    client = await open_client(config)
    try:
        return await _import(
            client,
            config,
            root=root,
            max_depth=max_depth,
            max_nodes=max_nodes,
            include_standard=include_standard,
            namespace_uris=namespace_uris,
            asset=asset,
        )
    except (UaError, OSError, TimeoutError, ConnectionError) as err:
        raise translate(err, endpoint) from err
    finally:
        await close_client(client)


async def _import(
    client: Client,
    config: OpcUaConnectorConfig,
    *,
    root: str,
    max_depth: int,
    max_nodes: int,
    include_standard: bool,
    namespace_uris: bool,
    asset: str,
) -> list[OpcUaTagConfig]:
    namespaces = await client.get_namespace_array()
    start = _resolve_root(root, namespaces)
    step = config.max_nodes_per_request
    walk = await _walk(
        client,
        start,
        max_depth=max_depth,
        max_nodes=max_nodes,
        include_standard=include_standard,
        step=step,
    )
    tags = await _describe(
        client, walk, step=step, namespaces=namespaces if namespace_uris else None, asset=asset
    )
    skipped = ", ".join(f"{n} {why}" for why, n in walk.skipped.most_common()) or "none"
    logger.info(
        "browsed %d nodes under %s: %d tags imported; skipped: %s",
        walk.visited,
        root,
        len(tags),
        skipped,
    )
    if walk.truncated:
        logger.warning("browse stopped at max_nodes = %d; raise it to import more", max_nodes)
    return tags


def _resolve_root(root: str, namespaces: Sequence[str]) -> ua.NodeId:
    try:
        node = ua.NodeId.from_string(root)
    except (ValueError, UaError) as err:
        raise ConnectorError(f"root {root!r} is not a NodeId") from err
    if isinstance(node, ua.ExpandedNodeId) and node.NamespaceUri:
        if node.NamespaceUri not in namespaces:
            raise ConnectorError(f"the server has no namespace {node.NamespaceUri}")
        return node_id(node.Identifier, namespaces.index(node.NamespaceUri), node.NodeIdType)
    return node_id(node.Identifier, node.NamespaceIndex, node.NodeIdType)


def _plain(node: ua.NodeId) -> ua.NodeId:
    return node_id(node.Identifier, node.NamespaceIndex, node.NodeIdType)


async def _walk(
    client: Client,
    root: ua.NodeId,
    *,
    max_depth: int,
    max_nodes: int,
    include_standard: bool,
    step: int,
) -> _Walk:
    """Breadth-first: one batched Browse per level."""
    walk = _Walk()
    seen = {root}
    frontier: list[tuple[ua.NodeId, tuple[str, ...], _Variable | None]] = [(root, (), None)]
    depth = 0
    while frontier:
        # objects: every hierarchical reference; variables: only their components and
        # properties (HasChild), which is all they have and far cheaper for servers that
        # resolve reference subtypes per reference, as asyncua's does
        results = await _browse_many(
            client,
            [(node, _HIERARCHICAL if owner is None else _HAS_CHILD) for node, _, owner in frontier],
            step=step,
        )
        upcoming: list[tuple[ua.NodeId, tuple[str, ...], _Variable | None]] = []
        for (_, segments, owner), references in zip(frontier, results, strict=True):
            for ref in references:
                target = ref.NodeId
                if getattr(target, "ServerIndex", 0):  # lives on another server
                    continue
                node = _plain(target)
                name = ref.BrowseName.Name or str(node.Identifier)
                if ref.NodeClass == ua.NodeClass.Variable and ref.ReferenceTypeId == _HAS_PROPERTY:
                    if owner is not None:
                        owner.properties[name] = node
                    continue  # a property describes its parent; it is no tag of its own
                if node in seen or (node.NamespaceIndex == 0 and not include_standard):
                    continue
                if depth >= max_depth:  # a component of a variable on the last level
                    continue
                if len(seen) >= max_nodes:
                    walk.truncated = True
                    continue
                seen.add(node)
                here = (*segments, name)
                if ref.NodeClass == ua.NodeClass.Variable:
                    variable = _Variable(node, here)
                    walk.variables.append(variable)
                    upcoming.append((node, here, variable))  # for its properties
                elif depth + 1 < max_depth:
                    upcoming.append((node, here, None))
        frontier = upcoming
        depth += 1
    walk.visited = len(seen)
    return walk


async def _browse_many(
    client: Client, items: list[tuple[ua.NodeId, ua.NodeId]], *, step: int
) -> list[list[ua.ReferenceDescription]]:
    """Forward references of each (node, reference type), ``step`` nodes per request."""
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    answers = await _gather_limited([_browse_chunk(client, chunk) for chunk in chunks])
    return [refs for answer in answers for refs in answer]


async def _browse_chunk(
    client: Client,
    items: Sequence[tuple[ua.NodeId, ua.NodeId]],
    *,
    direction: ua.BrowseDirection = ua.BrowseDirection.Forward,
    classes: int = ua.NodeClass.Object | ua.NodeClass.Variable,
) -> list[list[ua.ReferenceDescription]]:
    params = ua.BrowseParameters()
    params.RequestedMaxReferencesPerNode = 0
    params.NodesToBrowse = [
        ua.BrowseDescription(
            NodeId=node,
            BrowseDirection=direction,
            ReferenceTypeId=reference,
            IncludeSubtypes=True,
            NodeClassMask=classes,
            ResultMask=_RESULT_MASK,
        )
        for node, reference in items
    ]
    results = await client.uaclient.browse(params)
    out: list[list[ua.ReferenceDescription]] = []
    pending: dict[bytes, list[ua.ReferenceDescription]] = {}
    for result in results:
        refs = list(result.References) if result.StatusCode.is_good() else []
        out.append(refs)
        if result.ContinuationPoint:
            pending[result.ContinuationPoint] = refs
    while pending:
        more = ua.BrowseNextParameters()
        more.ReleaseContinuationPoints = False
        more.ContinuationPoints = list(pending)
        answers = await client.uaclient.browse_next(more)
        followed = dict(pending)
        pending = {}
        for point, result in zip(followed, answers, strict=True):
            refs = followed[point]
            refs.extend(result.References or [])
            if result.ContinuationPoint:
                pending[result.ContinuationPoint] = refs
    return out


async def _gather_limited(jobs: Sequence[Any], *, limit: int = 4) -> list[Any]:
    """Run coroutines a few at a time: servers queue requests, but not without end."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def _read_values(
    client: Client, items: Sequence[tuple[ua.NodeId, AttributeIds]], *, step: int
) -> list[ua.DataValue]:
    async def read(chunk: Sequence[tuple[ua.NodeId, AttributeIds]]) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in chunk]
        return await client.uaclient.read(params)

    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    answers = await _gather_limited([read(chunk) for chunk in chunks])
    return [value for answer in answers for value in answer]


def _value(dv: ua.DataValue) -> Any:
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return None if dv.Value is None else dv.Value.Value


async def _describe(
    client: Client,
    walk: _Walk,
    *,
    step: int,
    namespaces: Sequence[str] | None,
    asset: str,
) -> list[OpcUaTagConfig]:
    """Read every variable's attributes and properties in batches; build its tag."""
    items: list[tuple[ua.NodeId, AttributeIds]] = []
    for var in walk.variables:
        items.extend((var.node, attr) for attr in _READ_ATTRIBUTES)
        for prop in ("EURange", "EngineeringUnits"):
            if prop in var.properties:
                items.append((var.properties[prop], AttributeIds.Value))
    values = iter(await _read_values(client, items, step=step * len(_READ_ATTRIBUTES)))
    rows: list[tuple[_Variable, Any, Any, Any, Any, Any]] = []
    for var in walk.variables:
        data_type, rank, description = (_value(next(values)) for _ in _READ_ATTRIBUTES)
        eu_range = _value(next(values)) if "EURange" in var.properties else None
        units = _value(next(values)) if "EngineeringUnits" in var.properties else None
        rows.append((var, data_type, rank, description, eu_range, units))
    kinds = await _map_data_types(
        client, {r[1] for r in rows if isinstance(r[1], ua.NodeId)}, step=step
    )
    taken: set[str] = set()
    tags: list[OpcUaTagConfig] = []
    for var, data_type, rank, description, eu_range, units in rows:
        if isinstance(rank, int) and rank >= 0:
            walk.skipped["arrays"] += 1
            continue
        kind, why = kinds.get(data_type, (None, "variables without a DataType"))
        if kind is None:
            walk.skipped[why] += 1
            continue
        tags.append(
            _tag(
                var,
                kind,
                description,
                eu_range,
                units,
                namespaces=namespaces,
                asset=asset,
                taken=taken,
            )
        )
    return tags


def _tag(
    var: _Variable,
    kind: DataTypeName,
    description: Any,
    eu_range: Any,
    units: Any,
    *,
    namespaces: Sequence[str] | None,
    asset: str,
    taken: set[str],
) -> OpcUaTagConfig:
    segments = [path_segment(s) or "node" for s in var.segments]
    relative = "/".join(segments)
    unique, n = relative, 1
    while unique in taken:
        n += 1
        unique = f"{relative}_{n}"
    taken.add(unique)
    name = unique.rsplit("/", 1)[-1]
    fields: dict[str, Any] = {
        "name": name,
        "address": _address(var.node, namespaces),
        "data_type": kind,
    }
    if "/" in unique:
        fields["path"] = f"{asset}/{unique}" if asset else unique
    if isinstance(description, ua.LocalizedText) and description.Text:
        fields["description"] = description.Text
    if isinstance(eu_range, ua.Range) and eu_range.Low < eu_range.High:
        fields["eng_low"] = float(eu_range.Low)
        fields["eng_high"] = float(eu_range.High)
    if isinstance(units, ua.EUInformation) and units.DisplayName and units.DisplayName.Text:
        fields["unit"] = units.DisplayName.Text
    return OpcUaTagConfig.model_validate(fields)


def _address(node: ua.NodeId, namespaces: Sequence[str] | None) -> str:
    if namespaces is None or node.NamespaceIndex == 0 or node.NamespaceIndex >= len(namespaces):
        return node.to_string()
    bare = node_id(node.Identifier, 0, node.NodeIdType).to_string()
    return f"nsu={namespaces[node.NamespaceIndex]};{bare}"


async def _map_data_types(
    client: Client, types: Iterable[ua.NodeId], *, step: int
) -> dict[ua.NodeId, tuple[DataTypeName | None, str]]:
    """Map each DataType to a shopfloor type, walking up HasSubtype for derived types.

    Every level of the walk is one batched inverse Browse, whatever the number of types.
    """
    result: dict[ua.NodeId, tuple[DataTypeName | None, str]] = {}
    # each open type: the node reached so far on its way up the type tree
    climbing: dict[ua.NodeId, ua.NodeId] = {t: t for t in types}
    for _ in range(32):  # no real type tree is deeper
        for start, at in list(climbing.items()):
            if (
                at.NamespaceIndex == 0
                and isinstance(at.Identifier, int)
                and at.Identifier in _BUILTIN
            ):
                ident = at.Identifier
                kind = _BUILTIN[ident]
                result[start] = (kind, f"{_UNSUPPORTED_NAMES.get(ident, 'unsupported')} values")
                del climbing[start]
        if not climbing:
            break
        nodes = list(dict.fromkeys(climbing.values()))
        chunks = [nodes[i : i + step] for i in range(0, len(nodes), step)]
        answers = await _gather_limited(
            [
                _browse_chunk(
                    client,
                    [(node, _HAS_SUBTYPE) for node in chunk],
                    direction=ua.BrowseDirection.Inverse,
                    classes=ua.NodeClass.DataType,
                )
                for chunk in chunks
            ]
        )
        parents: dict[ua.NodeId, ua.NodeId | None] = {}
        for node, refs in zip(nodes, [r for a in answers for r in a], strict=True):
            parents[node] = _plain(refs[0].NodeId) if refs else None
        for start, at in list(climbing.items()):
            parent = parents.get(at)
            if parent is None:
                result[start] = (None, "values of unknown DataType")
                del climbing[start]
            else:
                climbing[start] = parent
    for start in climbing:
        result[start] = (None, "values of unknown DataType")
    return result


def render_toml(config: OpcUaConnectorConfig, tags: Sequence[OpcUaTagConfig] | None = None) -> str:
    """A ``[[connectors]]`` section for ``config`` with ``tags`` (default: its own).

    Only settings that differ from their defaults are written, so the text stays short
    and picks up better defaults later.
    """
    lines = ["[[connectors]]"]
    head = config.model_dump(exclude_defaults=True, exclude={"tags"})
    head = {"kind": config.kind, "name": config.name, "endpoint": config.endpoint, **head}
    lines += [f"{key} = {_toml_value(value)}" for key, value in head.items()]
    for tag in config.tags if tags is None else tags:
        lines += ["", "[[connectors.tags]]"]
        fields = tag.model_dump(exclude_defaults=True)
        fields = {"name": tag.name, "address": tag.address, **fields}
        if "data_type" not in fields:
            fields["data_type"] = tag.data_type
        lines += [f"{key} = {_toml_value(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
