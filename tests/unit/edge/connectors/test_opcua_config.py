"""OPC UA connector settings: secure by default, secrets outside the file, NodeId notation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shopfloor.config.connectors.opcua import (
    OpcUaConnectorConfig,
    OpcUaTagConfig,
    check_node_id,
)
from shopfloor.edge.connectors.opcua_security import read_password
from shopfloor.errors import ConnectorError

ENDPOINT = "opc.tcp://plc-7:4840"


def make(**values: Any) -> OpcUaConnectorConfig:
    return OpcUaConnectorConfig.model_validate({"name": "plc", "endpoint": ENDPOINT, **values})


def test_no_security_needs_allow_insecure() -> None:
    with pytest.raises(ValidationError, match="allow_insecure"):
        make(security_policy="None")
    assert not make(security_policy="None", allow_insecure=True).secure


def test_security_is_the_default_and_needs_certificates_and_trust() -> None:
    with pytest.raises(ValidationError, match="certificate, private_key, server_certificate"):
        make()
    config = make(certificate="c.pem", private_key="k.pem", server_certificate="s.pem")
    assert (config.security_policy, config.security_mode) == ("Basic256Sha256", "SignAndEncrypt")
    assert config.secure


def test_passwords_come_from_env_or_file_never_the_file_itself() -> None:
    insecure = {"security_policy": "None", "allow_insecure": True}
    with pytest.raises(ValidationError, match="username needs"):
        make(username="op", **insecure)
    with pytest.raises(ValidationError, match="not both"):
        make(username="op", password_env="A", password_file="p", **insecure)
    with pytest.raises(ValidationError, match="extra"):
        make(username="op", password="hunter2", **insecure)
    with pytest.raises(ValidationError, match="needs a username"):
        make(password_env="A", **insecure)


def test_read_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    insecure = {"security_policy": "None", "allow_insecure": True, "username": "op"}
    monkeypatch.setenv("PLC_PW", "from-env")
    assert read_password(make(password_env="PLC_PW", **insecure)) == "from-env"
    file = tmp_path / "pw"
    file.write_text("from-file\n")
    assert read_password(make(password_file=file, **insecure)) == "from-file"
    monkeypatch.delenv("PLC_PW")
    with pytest.raises(ConnectorError, match="PLC_PW"):
        read_password(make(password_env="PLC_PW", **insecure))


@pytest.mark.parametrize(
    "address",
    [
        "ns=2;s=Line1.Temp",
        "ns=2;i=1001",
        "i=2258",
        "nsu=urn:vendor:plc;s=Line1.Temp",
        "nsu=http://acme.com/UA/;i=5",
        "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
        "ns=2;s=with;semicolon",
    ],
)
def test_node_ids_accepted(address: str) -> None:
    assert check_node_id(address) == address


@pytest.mark.parametrize(
    "address", ["", "Line1.Temp", "ns=2", "ns=x;i=1", "ns=2;i=abc", "s=", "ns=2;q=1"]
)
def test_node_ids_refused(address: str) -> None:
    with pytest.raises(ValueError, match="not a NodeId"):
        check_node_id(address)


def test_register_layout_and_writes_are_refused_for_opc_ua_tags() -> None:
    with pytest.raises(ValidationError, match="byte_order"):
        OpcUaTagConfig(name="t", address="ns=2;i=1", byte_order="little")
    with pytest.raises(ValidationError, match="read-only"):
        OpcUaTagConfig(name="t", address="ns=2;i=1", writable=True)


def test_relative_files_resolve_against_the_configuration_folder(tmp_path: Path) -> None:
    config = make(certificate="pki/c.pem", private_key="/etc/k.pem", server_certificate="s.pem")
    resolved = config.resolve_paths(tmp_path)
    assert resolved.certificate == tmp_path / "pki/c.pem"
    assert resolved.private_key == Path("/etc/k.pem")
    assert resolved.server_certificate == tmp_path / "s.pem"


@pytest.mark.parametrize("model", [OpcUaConnectorConfig, OpcUaTagConfig])
def test_every_setting_is_described(model: type[BaseModel]) -> None:
    missing = [name for name, f in model.model_fields.items() if not f.description]
    assert missing == []
