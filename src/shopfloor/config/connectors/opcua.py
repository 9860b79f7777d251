"""OPC UA client settings: endpoint, security, credentials, subscription or polling, tags.

Secure by default: the policy is Basic256Sha256 with SignAndEncrypt, the server's
certificate must be trusted explicitly, and an unencrypted session (policy ``None``)
needs ``allow_insecure = true``. Passwords never live in the file: ``password_env``
names an environment variable, ``password_file`` a file holding it.

This module is imported by every configuration load, so it must not import asyncua.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shopfloor.config.connectors.base import ConnectorConfigBase, DataTypeName, TagConfig
from shopfloor.config.durations import parse_duration_s

SecurityPolicyName = Literal["None", "Basic256Sha256"]
SecurityModeName = Literal["Sign", "SignAndEncrypt"]

_NODE_ID = re.compile(
    r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/=]+)$",
    re.DOTALL,
)


def check_node_id(text: str) -> str:
    """Return ``text`` if it is NodeId notation (``ns=2;s=Line1.Temp``), else raise ValueError.

    Accepted: an optional ``ns=<index>;`` or ``nsu=<namespace URI>;`` prefix, then
    ``i=<number>``, ``s=<string>``, ``g=<guid>`` or ``b=<base64>``.
    """
    if not _NODE_ID.match(text):
        raise ValueError(
            f"{text!r} is not a NodeId; expected e.g. ns=2;s=Line1.Temp, ns=2;i=1001 "
            "or nsu=urn:vendor:plc;s=Line1.Temp"
        )
    return text


class OpcUaTagConfig(TagConfig):
    """One OPC UA variable to collect; ``address`` is its NodeId."""

    address: str = Field(
        description="NodeId of the variable: `ns=2;s=Line1.Temp`, `ns=2;i=1001`, or "
        "`nsu=<namespace URI>;s=Line1.Temp` (the URI is resolved to its index at connect)."
    )
    data_type: DataTypeName = Field(
        "float64",
        description="How the value is typed on the platform (`bool`, integer types, `float32`/"
        "`float64`, `string`); OPC UA values describe themselves, so this only sets the "
        "tag's kind. `shopfloor opcua browse` fills it in from the server's DataType.",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_node_id(value)

    @model_validator(mode="after")
    def _no_register_layout(self) -> OpcUaTagConfig:
        unused = {"byte_order", "word_order", "length"} & self.model_fields_set
        if unused:
            names = ", ".join(sorted(unused))
            raise ValueError(f"{names}: not used by OPC UA (values carry their own type)")
        if self.writable:
            raise ValueError("writable: the OPC UA connector is read-only")
        return self


class OpcUaConnectorConfig(ConnectorConfigBase):
    """An OPC UA server read through subscriptions (default) or polling."""

    kind: Literal["opcua"] = Field("opcua", description="Protocol: OPC UA (client).")
    endpoint: str = Field(description="Endpoint URL, e.g. `opc.tcp://plc-7:4840`.")
    security_policy: SecurityPolicyName = Field(
        "Basic256Sha256",
        description="`Basic256Sha256` (signed or encrypted) or `None` (no security; needs "
        "`allow_insecure = true`).",
    )
    security_mode: SecurityModeName = Field(
        "SignAndEncrypt",
        description="`SignAndEncrypt` or `Sign` (signed but readable on the wire).",
    )
    allow_insecure: bool = Field(
        False,
        description='Allow `security_policy = "None"`: no signature, no encryption, '
        "passwords in clear text. Off unless asked for.",
    )
    certificate: Path | None = Field(
        None,
        description="Client application certificate (PEM or DER); its subjectAltName URI is "
        "the client's application URI. Required with security.",
    )
    private_key: Path | None = Field(
        None, description="Private key of `certificate` (PEM or DER). Required with security."
    )
    private_key_password_env: str | None = Field(
        None, description="Environment variable holding the private key's password, if any."
    )
    server_certificate: Path | None = Field(
        None,
        description="The server certificate to trust, or the CA certificate that issued it "
        "(PEM may hold several). With security on, any other server is refused. Required "
        "with security.",
    )
    application_uri: str | None = Field(
        None,
        description="Client application URI; default: the URI in `certificate`'s "
        "subjectAltName (or `urn:shopfloor:edge` without a certificate).",
    )
    username: str | None = Field(None, description="User name for the session; default: anonymous.")
    password_env: str | None = Field(
        None, description="Environment variable holding the user's password."
    )
    password_file: Path | None = Field(
        None, description="File holding the user's password (trailing newline ignored)."
    )
    session_timeout: str = Field(
        "60s", description="How long the server keeps the session after the connection drops."
    )
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe",
        description="`subscribe`: the server reports changes (source timestamps and status "
        "codes kept); `poll`: read every tag group each `period` in one Read request.",
    )
    publishing_interval: str = Field(
        "1s", description="Subscription: how often the server sends the changes it collected."
    )
    sampling_interval: str = Field(
        "500ms", description="Subscription: how often the server samples each variable."
    )
    queue_size: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Subscription: changes the server keeps per variable between two "
        "publishes (the oldest are discarded beyond it).",
    )
    server_deadband: bool = Field(
        False,
        description="Subscription: also send each tag's `deadband` to the server as an "
        "absolute data-change filter, so small changes are not even transmitted.",
    )
    keepalive: str = Field(
        "10s",
        description="Subscription: the server sends at least this often, even without "
        "changes; silence for 1.5 times as long counts as a lost connection.",
    )
    max_pending_batches: int = Field(
        1000,
        ge=1,
        description="Subscription: received notification batches waiting to be processed; "
        "beyond it the oldest is dropped (counted and logged once).",
    )
    max_nodes_per_request: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Largest number of nodes in one Read or CreateMonitoredItems request "
        "(larger groups are split).",
    )
    tags: list[OpcUaTagConfig] = Field(
        default_factory=list, description="The variables to collect."
    )

    @field_validator("session_timeout", "publishing_interval", "sampling_interval", "keepalive")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration_s(value)
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"expected an opc.tcp:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _security(self) -> OpcUaConnectorConfig:
        if self.security_policy == "None":
            if not self.allow_insecure:
                raise ValueError(
                    'security_policy = "None" sends everything unsigned and unencrypted; '
                    "set allow_insecure = true to allow it"
                )
        else:
            missing = [
                key
                for key in ("certificate", "private_key", "server_certificate")
                if getattr(self, key) is None
            ]
            if missing:
                raise ValueError(
                    f"security_policy = {self.security_policy!r} needs {', '.join(missing)}"
                )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if self.username is None and (self.password_env or self.password_file):
            raise ValueError("a password needs a username")
        if self.username is not None and not (self.password_env or self.password_file):
            raise ValueError("username needs password_env or password_file")
        return self

    @property
    def secure(self) -> bool:
        """Whether the session is signed (and maybe encrypted)."""
        return self.security_policy != "None"

    @property
    def session_timeout_s(self) -> float:
        """``session_timeout`` in seconds."""
        return parse_duration_s(self.session_timeout)

    @property
    def publishing_interval_s(self) -> float:
        """``publishing_interval`` in seconds."""
        return parse_duration_s(self.publishing_interval)

    @property
    def sampling_interval_s(self) -> float:
        """``sampling_interval`` in seconds."""
        return parse_duration_s(self.sampling_interval)

    @property
    def keepalive_s(self) -> float:
        """``keepalive`` in seconds."""
        return parse_duration_s(self.keepalive)

    def resolve_paths(self, base: Path) -> OpcUaConnectorConfig:
        """Return a copy whose relative file paths are made absolute against ``base``."""
        update: dict[str, Path] = {}
        for key in ("certificate", "private_key", "server_certificate", "password_file"):
            value = getattr(self, key)
            if value is not None and not value.is_absolute():
                update[key] = (base / value).resolve()
        return self.model_copy(update=update) if update else self
