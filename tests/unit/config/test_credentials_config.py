"""Credentials and TLS in the configuration files: every problem named by key and line."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.config import load_config, load_edge_config
from shopfloor.errors import ConfigError
from shopfloor.server.ingest.credentials import issue_credential
from shopfloor.testing.certs import CertificatePair, make_ca, make_tls_certificate


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificatePair, CertificatePair]:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory)
    return ca, make_tls_certificate(directory, "server", issuer=ca, server=True)


def problems_of(path: Path, *, edge: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_edge_config(path) if edge else load_config(path)
    return info.value.problems


# ------------------------------------------------------------------ platform


def test_tls_files_and_credentials_resolve_against_the_config_file(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, server = certs
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "server.pem").write_bytes(server.certificate.read_bytes())
    (tmp_path / "tls" / "server.key").write_bytes(server.private_key.read_bytes())
    (tmp_path / "tls" / "ca.pem").write_bytes(ca.certificate.read_bytes())
    issue_credential(tmp_path / "edge-credentials.txt", "edge-1")
    config = tmp_path / "plant.toml"
    config.write_text(
        '[server.tls]\ncert_file = "tls/server.pem"\nkey_file = "tls/server.key"\n'
        'client_ca = "tls/ca.pem"\n\n'
        '[ingest]\nedge_credentials = "edge-credentials.txt"\n'
    )
    loaded = load_config(config)
    assert loaded.server.tls is not None
    assert loaded.server.tls.cert_file == tmp_path / "tls" / "server.pem"
    assert loaded.server.tls.key_file == tmp_path / "tls" / "server.key"
    assert loaded.server.tls.client_ca == tmp_path / "tls" / "ca.pem"
    assert loaded.ingest.edge_credentials == tmp_path / "edge-credentials.txt"


def test_empty_means_no_credentials_and_no_tls(tmp_path: Path) -> None:
    config = tmp_path / "plant.toml"
    config.write_text('[server]\nport = 80\n[ingest]\nedge_credentials = ""\n')
    loaded = load_config(config)
    assert loaded.ingest.edge_credentials is None
    assert loaded.server.tls is None


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    config = tmp_path / "plant.toml"
    config.write_text('# plant\n[server.tls]\ncert_file = "server.pem"\n')
    (problem,) = problems_of(config)
    assert problem.startswith("  server.tls.key_file (line 2): Field required")


def test_the_old_flat_tls_keys_say_where_they_moved(tmp_path: Path) -> None:
    config = tmp_path / "plant.toml"
    config.write_text('[server]\ntls_cert_file = "a.pem"\ntls_key_file = "a.key"\n')
    (problem,) = problems_of(config)
    assert "moved to a [server.tls] table as cert_file and key_file" in problem


def test_missing_tls_files_are_named_by_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "plant.toml"
    config.write_text(
        '[server]\nport = 8443\n[server.tls]\ncert_file = "missing.pem"\n'
        'key_file = "missing.key"\nclient_ca = "missing-ca.pem"\n'
    )
    cert, key, client_ca = problems_of(config)
    assert cert.startswith("  server.tls.cert_file (line 4): cannot read ")
    assert str(tmp_path / "missing.pem") in cert
    assert "No such file" in cert
    assert key.startswith("  server.tls.key_file (line 5): cannot read ")
    assert client_ca.startswith("  server.tls.client_ca (line 6): cannot read ")


def test_a_key_of_another_certificate_is_named(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, server = certs
    config = tmp_path / "plant.toml"
    config.write_text(
        f'[server.tls]\ncert_file = "{server.certificate}"\nkey_file = "{ca.private_key}"\n'
    )
    (problem,) = problems_of(config)
    assert problem.startswith("  server.tls.key_file (line 3): ")
    assert f"is not the private key of cert_file {server.certificate}" in problem


def test_a_file_that_is_no_certificate_is_named(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    _, server = certs
    (tmp_path / "server.pem").write_text("not a certificate\n")
    config = tmp_path / "plant.toml"
    config.write_text(
        f'[server.tls]\ncert_file = "server.pem"\nkey_file = "{server.private_key}"\n'
    )
    (problem,) = problems_of(config)
    assert problem.startswith("  server.tls.cert_file (line 2): ")
    assert "is not a PEM certificate" in problem


def test_an_expired_certificate_is_named_with_its_date(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, _ = certs
    then = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    old = make_tls_certificate(tmp_path, "old", issuer=ca, server=True, days=30, now=then)
    config = tmp_path / "plant.toml"
    config.write_text(
        f'[server.tls]\ncert_file = "{old.certificate}"\nkey_file = "{old.private_key}"\n'
    )
    (problem,) = problems_of(config)
    assert problem.startswith("  server.tls.cert_file (line 2): ")
    assert "expired on 2020-01-30" in problem
    assert "shopfloor certs issue-server" in problem


def test_an_encrypted_key_needs_its_password_from_the_environment(
    tmp_path: Path,
    certs: tuple[CertificatePair, CertificatePair],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server = certs
    key = serialization.load_pem_private_key(server.private_key.read_bytes(), password=None)
    encrypted = tmp_path / "server.key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    tls = f'[server.tls]\ncert_file = "{server.certificate}"\nkey_file = "server.key.pem"\n'
    config = tmp_path / "plant.toml"

    config.write_text(tls)
    (problem,) = problems_of(config)
    assert problem.startswith("  server.tls.key_file (line 3): ")
    assert "is encrypted: set key_password_env" in problem

    config.write_text(tls + 'key_password_env = "SHOPFLOOR_TEST_KEY_PASSWORD"\n')
    monkeypatch.delenv("SHOPFLOOR_TEST_KEY_PASSWORD", raising=False)
    (problem,) = problems_of(config)
    assert problem == (
        "  server.tls.key_password_env (line 4): environment variable "
        "SHOPFLOOR_TEST_KEY_PASSWORD is not set"
    )
    monkeypatch.setenv("SHOPFLOOR_TEST_KEY_PASSWORD", "wrong")
    (problem,) = problems_of(config)
    assert "does not decrypt" in problem
    assert problem.startswith("  server.tls.key_password_env (line 4): ")

    monkeypatch.setenv("SHOPFLOOR_TEST_KEY_PASSWORD", "s3cret")
    loaded = load_config(config)
    assert loaded.server.tls is not None
    assert loaded.server.tls.ssl_context().minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_missing_credentials_file_is_named_with_how_to_make_it(tmp_path: Path) -> None:
    config = tmp_path / "plant.toml"
    config.write_text('[ingest]\nmax_edges = 10\nedge_credentials = "creds.txt"\n')
    (problem,) = problems_of(config)
    assert problem.startswith("  ingest.edge_credentials (line 3): cannot read ")
    assert "shopfloor edge credential" in problem


def test_config_check_reports_malformed_credential_lines(tmp_path: Path) -> None:
    creds = tmp_path / "creds.txt"
    issue_credential(creds, "edge-1")
    with creds.open("a") as file:
        file.write("# a comment\nedge-2 sha256:abc\n")
    config = tmp_path / "plant.toml"
    config.write_text('[ingest]\nedge_credentials = "creds.txt"\n')
    load_config(config)  # the server starts: it skips the line and logs it

    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    assert "creds.txt line 3:" in result.output
    assert "sha256:" in result.output

    creds.write_text(creds.read_text().replace("edge-2 sha256:abc\n", ""))
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------- edge

EDGE = '[edge]\nid = "edge-1"\n\n[uplink]\nurl = "https://platform.plant.local:8443"\n'


def test_the_edge_reads_its_token_from_a_file_next_to_its_config(tmp_path: Path) -> None:
    (tmp_path / "edge.token").write_text("s3cret-token_value\nignored second line\n")
    (tmp_path / "edge.toml").write_text(EDGE + 'token_file = "edge.token"\n')
    uplink = load_edge_config(tmp_path / "edge.toml").uplink
    assert uplink.token_file == tmp_path / "edge.token"
    assert uplink.token() == "s3cret-token_value"
    assert uplink.ssl_context() is None, "the system's CAs"


def test_the_edge_reads_its_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "edge.toml").write_text(EDGE + 'token_env = "SHOPFLOOR_TEST_EDGE_TOKEN"\n')
    uplink = load_edge_config(tmp_path / "edge.toml").uplink
    monkeypatch.delenv("SHOPFLOOR_TEST_EDGE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="SHOPFLOOR_TEST_EDGE_TOKEN is not set"):
        uplink.token()
    monkeypatch.setenv("SHOPFLOOR_TEST_EDGE_TOKEN", "from-env")
    assert uplink.token() == "from-env"
    monkeypatch.setenv("SHOPFLOOR_TEST_EDGE_TOKEN", "two words")
    with pytest.raises(ConfigError, match="not one word") as info:
        uplink.token()
    assert "two" not in str(info.value), "the token is never echoed"


def test_two_token_sources_conflict_at_the_second(tmp_path: Path) -> None:
    (tmp_path / "edge.token").write_text("t\n")
    (tmp_path / "edge.toml").write_text(EDGE + 'token_env = "T"\ntoken_file = "edge.token"\n')
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem == "  uplink.token_file (line 7): give token_env or token_file, not both"


def test_a_token_is_for_the_http_transport(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text(
        '[edge]\nid = "e"\n[uplink]\ntransport = "mqtt"\ntoken_env = "T"\n'
    )
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem.startswith("  uplink.token_env (line 5): token_env is for the HTTP transport")


def test_missing_or_empty_token_and_ca_files_are_named_by_line(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text(
        EDGE + 'token_file = "missing.token"\nca_file = "missing-ca.pem"\n'
    )
    token, ca = problems_of(tmp_path / "edge.toml", edge=True)
    assert token.startswith("  uplink.token_file (line 6): cannot read ")
    assert ca.startswith("  uplink.ca_file (line 7): cannot load ")

    (tmp_path / "empty.token").write_text("\n")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    (tmp_path / "edge.toml").write_text(EDGE + 'token_file = "empty.token"\nca_file = "ca.pem"\n')
    token, ca = problems_of(tmp_path / "edge.toml", edge=True)
    assert token.startswith("  uplink.token_file (line 6): ")
    assert token.endswith("is empty")
    assert ca.startswith("  uplink.ca_file (line 7): cannot load ")


def test_the_ca_file_is_the_only_trusted_ca(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, _ = certs
    (tmp_path / "edge.toml").write_text(EDGE + f'ca_file = "{ca.certificate}"\n')
    context = load_edge_config(tmp_path / "edge.toml").uplink.ssl_context()
    assert context is not None
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert subjects == [{"commonName": "shopfloor test CA", "organizationName": "shopfloor"}]


def test_the_edge_presents_its_client_certificate(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, _ = certs
    make_tls_certificate(tmp_path / "pki", "edge-1", issuer=ca, server=False)
    (tmp_path / "edge.toml").write_text(
        EDGE + 'ca_file = "pki/ca.pem"\ncert_file = "pki/edge-1.pem"\n'
        'key_file = "pki/edge-1.key.pem"\n'
    )
    (tmp_path / "pki" / "ca.pem").write_bytes(ca.certificate.read_bytes())
    uplink = load_edge_config(tmp_path / "edge.toml").uplink
    assert uplink.cert_file == tmp_path / "pki" / "edge-1.pem"
    context = uplink.ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_client_certificate_problems_are_named_by_key_and_line(
    tmp_path: Path, certs: tuple[CertificatePair, CertificatePair]
) -> None:
    ca, server = certs
    (tmp_path / "edge.toml").write_text(EDGE + 'cert_file = "edge.pem"\n')
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert "cert_file needs key_file" in problem

    (tmp_path / "edge.toml").write_text(EDGE + 'key_file = "edge.key.pem"\n')
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem.startswith("  uplink.key_file (line 6): ")
    assert "cert_file and key_file go together" in problem

    (tmp_path / "edge.toml").write_text(
        EDGE + 'cert_file = "missing.pem"\nkey_file = "missing.key.pem"\n'
    )
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem.startswith("  uplink.cert_file (line 6): cannot read ")

    (tmp_path / "edge.toml").write_text(
        EDGE + f'cert_file = "{server.certificate}"\nkey_file = "{ca.private_key}"\n'
    )
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem.startswith("  uplink.key_file (line 7): cannot load ")

    (tmp_path / "edge.toml").write_text(
        '[edge]\nid = "edge-1"\n[uplink]\ntransport = "mqtt"\ncert_file = "edge.pem"\n'
    )
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert "cert_file is for the HTTP transport" in problem
    assert "[uplink.mqtt.tls] cert_file and key_file" in problem


def test_a_missing_broker_password_file_is_named_by_line(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text(
        '[edge]\nid = "e"\n[uplink]\ntransport = "mqtt"\n[uplink.mqtt]\nhost = "broker"\n'
        'username = "shopfloor-edge-e"\npassword_file = "missing.password"\n'
    )
    (problem,) = problems_of(tmp_path / "edge.toml", edge=True)
    assert problem.startswith("  uplink.mqtt.password_file (line 8): cannot read ")
    assert "missing.password" in problem
