"""Pure parts of browse/import and trust: path segments, TOML output, certificate checks."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig, OpcUaTagConfig
from shopfloor.edge.connectors.opcua_browse import path_segment, render_toml
from shopfloor.edge.connectors.opcua_security import (
    application_uri_of,
    check_trusted,
    first_certificate,
    load_certificates,
)
from shopfloor.errors import ConnectorError
from shopfloor.model.tags import validate_path
from shopfloor.testing.certs import make_app_certificate, make_ca


@pytest.mark.parametrize(
    ("browse_name", "segment"),
    [
        ("Temp", "temp"),
        ("SpindleSpeed", "spindle_speed"),
        ("Line1.Temp", "line1_temp"),
        ("EURange", "eu_range"),
        ("Fan Speed (rpm)", "fan_speed_rpm"),
        ("plant-1", "plant-1"),
        ("Größe", "groe"),  # accents dropped; ß has no ASCII form
        ("__Motor__", "motor"),
        ("温度", ""),
    ],
)
def test_path_segment(browse_name: str, segment: str) -> None:
    assert path_segment(browse_name) == segment
    if segment:
        validate_path(segment)


def test_render_toml_round_trips_through_the_config_model(tmp_path: Path) -> None:
    section = OpcUaConnectorConfig(
        name="oven",
        endpoint="opc.tcp://plc:4840",
        asset="acme/p1",
        certificate=tmp_path / "c.pem",
        private_key=tmp_path / "k.pem",
        server_certificate=tmp_path / "s.pem",
        username="op",
        password_env="OVEN_PW",
        mode="poll",
    )
    tags = [
        OpcUaTagConfig(
            name="temp",
            path="acme/p1/oven/temp",
            address='ns=2;s=Oven."Temp" \\ 1',
            unit="°C",
            eng_low=0.0,
            eng_high=250.0,
            description='quote " and newline\nhere',
        ),
        OpcUaTagConfig(
            name="run", address="ns=2;i=7", data_type="bool", states={"0": "off", "1": "on"}
        ),
    ]
    text = render_toml(section, tags)
    assert "password" not in text.replace("password_env", "")
    loaded = OpcUaConnectorConfig.model_validate(tomllib.loads(text)["connectors"][0])
    assert loaded == section.model_copy(update={"tags": tags})


def test_trust_the_certificate_itself_or_its_issuer(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = make_app_certificate(tmp_path, "srv", uri="urn:srv", issuer=ca)
    other = make_app_certificate(tmp_path, "other", uri="urn:other")
    now = dt.datetime.now(dt.UTC)
    cert = server.load_certificate()
    check_trusted(cert, (ca.load_certificate(),), now=now)
    check_trusted(cert, (other.load_certificate(), server.load_certificate()), now=now)
    with pytest.raises(ConnectorError, match="not trusted"):
        check_trusted(cert, (other.load_certificate(),), now=now)
    # a leaf certificate is no issuer, even when it signed nothing else
    with pytest.raises(ConnectorError, match="not trusted"):
        check_trusted(other.load_certificate(), (server.load_certificate(),), now=now)
    with pytest.raises(ConnectorError, match="valid only"):
        check_trusted(cert, (ca.load_certificate(),), now=now + dt.timedelta(days=365))
    assert application_uri_of(cert) == "urn:srv"


def test_certificate_files_and_chains(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = make_app_certificate(tmp_path, "leaf", uri="urn:leaf", issuer=ca)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(leaf.certificate.read_bytes() + ca.certificate.read_bytes())
    assert [c.subject for c in load_certificates(bundle)] == [
        leaf.load_certificate().subject,
        ca.load_certificate().subject,
    ]
    der = tmp_path / "leaf.der"
    der.write_bytes(leaf.der())
    assert load_certificates(der)[0] == leaf.load_certificate()
    assert first_certificate(leaf.der() + ca.der()) == leaf.der()
    with pytest.raises(ConnectorError):
        load_certificates(tmp_path / "missing.pem")
