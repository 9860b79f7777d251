"""The simulated factory as an OPC UA server, and a quick-starting asyncua server for tests.

:class:`PlantOpcUaServer` exposes a :class:`~shopfloor.simulator.Plant` as an ISA-95
object tree (enterprise / site / area / line / cell / equipment, then one typed variable
per tag, with EURange and EngineeringUnits properties) and writes every tag's value
with its sample time as source timestamp and its quality as status code, as the plant
advances in real time. :meth:`PlantOpcUaServer.connector_config` returns the matching
``kind = "opcua"`` connector section, so ``shopfloor demo --protocol opcua`` reads the
plant through a real OPC UA stack. With ``secure=True`` the only endpoint is
Basic256Sha256 SignAndEncrypt, with throwaway certificates trusted in both directions.

Start-up time: asyncua fills the whole standard address space (6,000 nodes, about 2 s)
before a server can start. :func:`create_server` leaves out what a server of plain
variables never uses (the instance declarations inside type definitions, and the XML
and JSON encodings of data types), which halves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import NodeManagementService
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.standard_address_space.standard_address_space_services import (
    create_standard_address_space_Services,
)
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig, OpcUaTagConfig
from shopfloor.model import DataType, PointBatch, TagMeta
from shopfloor.simulator.plant import Plant
from shopfloor.testing.certs import CertificatePair, make_app_certificate

__all__ = ["NAMESPACE_URI", "PasswordUsers", "PlantOpcUaServer", "create_server", "serve_plant"]

logger = logging.getLogger(__name__)

NAMESPACE_URI = "urn:shopfloor:simulator"
"""Namespace of the plant's nodes; tag addresses use it (``nsu=…``), not its index."""
SERVER_URI = "urn:shopfloor:simulator:opcua"
CLIENT_URI = "urn:shopfloor:edge:demo"

_VARIANT = {
    DataType.FLOAT: ua.VariantType.Double,
    DataType.INT: ua.VariantType.Int32,
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.STRING: ua.VariantType.String,
}
_CONFIG_TYPE = {
    DataType.FLOAT: "float64",
    DataType.INT: "int32",
    DataType.BOOL: "bool",
    DataType.STRING: "string",
}
# UNECE Recommendation 20 codes, as OPC UA's EUInformation wants them (Part 8, 5.6.3).
_UNECE = {"degC": "CEL", "kW": "KWT", "kWh": "KWH", "bar": "BAR", "m/s": "MTS", "mm/s": "C16"}
_UNECE |= {"rpm": "RPM", "s": "SEC"}
_UNITS_URI = "http://www.opcfoundation.org/UA/units/un/cefact"
_EPOCH: Any = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # Any: asyncua wants its DateTime
_TYPE_CLASSES = (ua.NodeClass.ObjectType, ua.NodeClass.VariableType)
_INSTANCE_CLASSES = (ua.NodeClass.Object, ua.NodeClass.Variable, ua.NodeClass.Method)
_UNUSED_ENCODINGS = ("Default XML", "Default JSON")


# ----------------------------------------------------------------- fast server
class _Collect:
    """Stands in for the node service while the generated code lists the standard nodes."""

    def __init__(self) -> None:
        self.nodes: list[ua.AddNodesItem] = []
        self.references: list[ua.AddReferencesItem] = []

    def add_nodes(self, nodes: list[ua.AddNodesItem]) -> None:
        self.nodes.extend(nodes)

    def add_references(self, references: list[ua.AddReferencesItem]) -> None:
        self.references.extend(references)


def _fill_slim(service: NodeManagementService) -> None:
    """Add the standard nodes a server of plain variables uses (blocking; run in a thread)."""
    every = _Collect()
    create_standard_address_space_Services(every)  # type: ignore[no-untyped-call]
    by_id = {item.RequestedNewNodeId: item for item in every.nodes}
    dropped: dict[ua.NodeId, bool] = {}

    def drop(item: ua.AddNodesItem) -> bool:
        node = item.RequestedNewNodeId
        if node not in dropped:
            dropped[node] = False  # breaks reference cycles
            parent = by_id.get(item.ParentNodeId)
            dropped[node] = (
                item.NodeClass == ua.NodeClass.Object and item.BrowseName.Name in _UNUSED_ENCODINGS
            ) or (
                parent is not None
                and item.NodeClass in _INSTANCE_CLASSES
                and (parent.NodeClass in _TYPE_CLASSES or drop(parent))
            )
        return dropped[node]

    keep = [item for item in every.nodes if not drop(item)]
    gone = {node for node, out in dropped.items() if out}
    references = [
        r for r in every.references if r.SourceNodeId not in gone and r.TargetNodeId not in gone
    ]
    pending = list(service.try_add_nodes(keep, check=False))
    pending = list(service.try_add_nodes(pending, check=False))  # children before parents
    if pending:
        raise RuntimeError(f"{len(pending)} standard nodes could not be added")
    failed = list(service.try_add_references(references))
    if failed:
        logger.debug("%d standard references left out", len(failed))


class _SlimInternalServer(InternalServer):
    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        await asyncio.to_thread(_fill_slim, self.node_mgt_service)


class PasswordUsers(UserManager):
    """An asyncua user manager with a fixed table of user names and passwords."""

    def __init__(self, users: Mapping[str, str], *, anonymous: bool = False) -> None:
        self._users = dict(users)
        self._anonymous = anonymous

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The user if the password matches (or anonymous access is allowed), else None."""
        if username is None:
            return User(role=UserRole.User) if self._anonymous else None
        if username in self._users and self._users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


async def create_server(
    endpoint: str,
    *,
    name: str = "shopfloor simulator",
    application_uri: str = SERVER_URI,
    certificate: CertificatePair | None = None,
    policies: Sequence[ua.SecurityPolicyType] = (ua.SecurityPolicyType.NoSecurity,),
    users: Mapping[str, str] | None = None,
    trusted_clients: Sequence[x509.Certificate] | None = None,
    clock: bool = True,
) -> Server:
    """An initialised (not yet started) asyncua server with a slim standard address space.

    Args:
        endpoint: e.g. ``opc.tcp://127.0.0.1:4840``.
        name: the server's application name.
        application_uri: must match the URI in ``certificate``.
        certificate: the server's certificate and key; needed by secure policies.
        policies: the endpoints offered.
        users: user names and passwords; when given, anonymous sessions are refused.
        trusted_clients: when given, only these client certificates may open a session.
        clock: keep ServerStatus.CurrentTime ticking (stopping then takes up to 1 s).
    """
    server = Server(iserver=_SlimInternalServer())
    await server.init()
    await server.set_application_uri(application_uri)
    server.set_endpoint(endpoint)
    server.set_server_name(name)
    server.set_security_policy(list(policies))
    if not clock:
        server.disable_clock()
    if users is not None:
        server.iserver.set_user_manager(PasswordUsers(users))
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_identity_tokens([ua.AnonymousIdentityToken])
    if certificate is not None:
        await server.load_certificate(certificate.certificate.read_bytes(), format="pem")
        await server.load_private_key(certificate.private_key.read_bytes(), format="pem")
    if trusted_clients is not None:
        allowed = {c.public_bytes(serialization.Encoding.DER) for c in trusted_clients}

        async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
            if cert.public_bytes(serialization.Encoding.DER) not in allowed:
                raise ServiceError(StatusCodes.BadCertificateUntrusted)

        server.set_certificate_validator(validate)
    return server


# ------------------------------------------------------------------ the plant
def _node_id(identifier: Any, namespace: int = 0) -> ua.NodeId:
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)  # type: ignore[arg-type]


def _unit(unit: str) -> ua.EUInformation:
    code = _UNECE.get(unit, "")
    unit_id = int.from_bytes(code.encode(), "big") if code else -1
    return ua.EUInformation(
        NamespaceUri=_UNITS_URI,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


class PlantOpcUaServer:
    """A simulated plant served over OPC UA, updated in real time.

    Args:
        plant: the simulated factory.
        host: address to listen on.
        port: TCP port (0 is not supported by asyncua: pick a free one).
        period_s: how often the plant advances (its sample period).
        secure: offer only Basic256Sha256 SignAndEncrypt, with certificates generated in
            ``cert_dir`` (a temporary folder by default, removed by :meth:`stop`).
        cert_dir: where the server and client certificates go.
        users: user names and passwords required to open a session (default anonymous).
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        port: int = 4840,
        period_s: float = 1.0,
        secure: bool = False,
        cert_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.plant = plant
        self.endpoint = f"opc.tcp://{host}:{port}"
        self.period_s = period_s
        self.secure = secure
        self._cert_dir = cert_dir
        self._own_cert_dir = False
        self._users = dict(users) if users else None
        self.server_certificate: CertificatePair | None = None
        self.client_certificate: CertificatePair | None = None
        self.startup_s = 0.0
        self.first_sample_ns: int | None = None
        """Time of the first sample served; the plant's history starts there."""
        """Seconds :meth:`start` took (address space, certificates, first values)."""
        self._server: Server | None = None
        self._nodes: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}
        self._metas = plant.tags()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PlantOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space, write the first values and start serving."""
        started = time.perf_counter()
        certificate, trusted = None, None
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.secure:
            certificate, trusted = await asyncio.to_thread(self._make_certificates)
            policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        server = await create_server(
            self.endpoint,
            certificate=certificate,
            policies=policies,
            users=self._users,
            trusted_clients=trusted,
        )
        index = await server.register_namespace(NAMESPACE_URI)
        await self._build(server, index)
        now = time.time_ns()
        period_ns = round(self.period_s * 1e9)
        first = now - now % period_ns
        self.first_sample_ns = first
        await self._write(server, self.plant.advance(start_ns=first, steps=1, period_ns=period_ns))
        await server.start()
        self._server = server
        self._task = asyncio.create_task(
            self._run(server, first + period_ns, period_ns), name=f"opcua-plant {self.endpoint}"
        )
        self.startup_s = time.perf_counter() - started
        logger.info(
            "OPC UA plant server at %s (%s) up in %.2f s",
            self.endpoint,
            "Basic256Sha256 SignAndEncrypt" if self.secure else "no security",
            self.startup_s,
        )

    def _make_certificates(self) -> tuple[CertificatePair, list[x509.Certificate]]:
        if self._cert_dir is None:
            self._cert_dir = Path(tempfile.mkdtemp(prefix="shopfloor-opcua-"))
            self._own_cert_dir = True
        self.server_certificate = make_app_certificate(
            self._cert_dir, "opcua-server", uri=SERVER_URI
        )
        self.client_certificate = make_app_certificate(
            self._cert_dir, "opcua-client", uri=CLIENT_URI
        )
        return self.server_certificate, [self.client_certificate.load_certificate()]

    async def _build(self, server: Server, index: int) -> None:
        folders: dict[str, Any] = {"": server.nodes.objects}
        for meta in self._metas:
            parent = await self._folder(folders, meta.asset, index)
            variant = _VARIANT[meta.data_type]
            node = await parent.add_variable(
                _node_id(meta.path, index),
                ua.QualifiedName(meta.name, index),
                ua.Variant(ua.get_default_value(variant), variant),
            )
            if meta.description:
                await node.write_attribute(
                    AttributeIds.Description,
                    ua.DataValue(ua.Variant(ua.LocalizedText(meta.description))),
                )
            if meta.eng_low is not None and meta.eng_high is not None:
                await node.add_property(
                    _node_id(f"{meta.path}#EURange", index),
                    ua.QualifiedName("EURange", 0),
                    ua.Range(Low=meta.eng_low, High=meta.eng_high),
                    datatype=_node_id(ObjectIds.Range),
                )
            if meta.unit:
                await node.add_property(
                    _node_id(f"{meta.path}#EngineeringUnits", index),
                    ua.QualifiedName("EngineeringUnits", 0),
                    _unit(meta.unit),
                    datatype=_node_id(ObjectIds.EUInformation),
                )
            self._nodes[meta.path] = (node.nodeid, variant)

    async def _folder(self, folders: dict[str, Any], path: str, index: int) -> Any:
        if path in folders:
            return folders[path]
        parent_path, _, name = path.rpartition("/")
        parent = await self._folder(folders, parent_path, index)
        folder = await parent.add_object(_node_id(path, index), ua.QualifiedName(name, index))
        folders[path] = folder
        return folder

    async def _run(self, server: Server, next_ns: int, period_ns: int) -> None:
        """Advance the plant each period and write its values; catch up at most 10 steps."""
        while True:
            now = time.time_ns()
            if now < next_ns:
                await asyncio.sleep((next_ns - now) / 1e9)
                continue
            behind = (now - next_ns) // period_ns + 1
            if behind > 10:  # the process stalled: skip ahead rather than replay
                next_ns += (behind - 10) * period_ns
                behind = 10
            batch = self.plant.advance(start_ns=next_ns, steps=int(behind), period_ns=period_ns)
            next_ns += int(behind) * period_ns
            await self._write(server, batch)

    async def _write(self, server: Server, batch: PointBatch) -> None:
        nodes = self._nodes
        received: Any = dt.datetime.now(dt.UTC)
        paths = batch.tags
        for k, ts, value, quality in zip(
            batch.tag_index.tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            strict=True,
        ):
            node, variant = nodes[paths[k]]
            if quality & 0x80000000 or math.isnan(value):
                wire: Any = None
            elif variant is ua.VariantType.Double:
                wire = value
            elif variant is ua.VariantType.Boolean:
                wire = value != 0
            else:
                wire = round(value)
            await server.write_attribute_value(
                node,
                ua.DataValue(
                    Value=ua.Variant(wire, variant if wire is not None else ua.VariantType.Null),
                    StatusCode=_status(quality if wire is not None or quality else 0x80000000),
                    SourceTimestamp=_EPOCH + dt.timedelta(microseconds=ts // 1000),
                    ServerTimestamp=received,
                ),
            )

    def connector_config(
        self,
        *,
        name: str = "opcua-plant",
        mode: str = "subscribe",
        tags: Sequence[TagMeta] | None = None,
    ) -> OpcUaConnectorConfig:
        """The connector section that reads this server (all tags, or ``tags``)."""
        settings: dict[str, Any] = {
            "kind": "opcua",
            "name": name,
            "endpoint": self.endpoint,
            "mode": mode,
            "period": f"{self.period_s * 1000:g}ms",
            "publishing_interval": f"{self.period_s * 1000:g}ms",
            "sampling_interval": f"{self.period_s * 1000:g}ms",
            "tags": [_tag_config(m) for m in (self._metas if tags is None else tags)],
        }
        if self.secure:
            assert self.client_certificate is not None
            assert self.server_certificate is not None
            settings |= {
                "certificate": self.client_certificate.certificate,
                "private_key": self.client_certificate.private_key,
                "server_certificate": self.server_certificate.certificate,
            }
        else:
            settings |= {"security_policy": "None", "allow_insecure": True}
        if self._users:
            user = next(iter(self._users))
            settings |= {"username": user, "password_env": "SHOPFLOOR_OPCUA_PASSWORD"}
        return OpcUaConnectorConfig.model_validate(settings)

    async def stop(self) -> None:
        """Stop updating and serving; remove generated certificates. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._own_cert_dir and self._cert_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._cert_dir, True)
            self._cert_dir = None
            self._own_cert_dir = False


def _tag_config(meta: TagMeta) -> OpcUaTagConfig:
    fields: dict[str, Any] = {
        "name": meta.name,
        "path": meta.path,
        "address": f"nsu={NAMESPACE_URI};s={meta.path}",
        "data_type": _CONFIG_TYPE[meta.data_type],
        "unit": meta.unit,
        "description": meta.description,
        "eng_low": meta.eng_low,
        "eng_high": meta.eng_high,
    }
    if meta.states:
        fields["states"] = {str(k): v for k, v in meta.states}
    return OpcUaTagConfig.model_validate(fields)


async def serve_plant(plant: Plant, **kwargs: Any) -> tuple[PlantOpcUaServer, OpcUaConnectorConfig]:
    """Start a :class:`PlantOpcUaServer` (keyword arguments as its constructor) and
    return it with the connector section that reads it. The caller stops it."""
    server = PlantOpcUaServer(plant, **kwargs)
    await server.start()
    return server, server.connector_config()
