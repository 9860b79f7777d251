"""`shopfloor certs`: what it writes is checked with cryptography, as a TLS peer would
(chain, names, key usage), and the CA's key with the file system (mode 0600)."""

from __future__ import annotations

import datetime as dt
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.pki import edge_of_certificate

runner = CliRunner()


def certs(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["certs", *args])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def verify_chain(leaf: x509.Certificate, ca: x509.Certificate, purpose: str) -> None:
    """Verify ``leaf`` against ``ca`` as a TLS client or server would (cryptography's
    X.509 path validation: signature, validity, key usage, extended key usage, names)."""
    from cryptography.x509.verification import PolicyBuilder, Store

    builder = PolicyBuilder().store(Store([ca])).time(dt.datetime.now(dt.UTC))
    if purpose == "server":
        builder.build_server_verifier(x509.DNSName("localhost")).verify(leaf, [])
    else:
        builder.build_client_verifier().verify(leaf, [])


def usage(cert: x509.Certificate) -> x509.KeyUsage:
    return cert.extensions.get_extension_for_class(x509.KeyUsage).value


def test_init_makes_a_ca_and_a_server_certificate_for_the_given_names(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    code, output = certs(
        "init", "--dir", str(pki), "--host", "historian.plant.local", "--host", "localhost",
        "--ip", "10.1.2.3",
    )  # fmt: skip
    assert code == 0, output
    assert "historian.plant.local, localhost, 10.1.2.3" in output
    (ca,) = load(pki / "ca.pem")
    server, chained_ca = load(pki / "server.pem")
    assert chained_ca == ca, "the server sends its CA after its own certificate"

    verify_chain(server, ca, "server")
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert usage(ca).key_cert_sign
    assert usage(ca).crl_sign

    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["historian.plant.local", "localhost"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert usage(server).digital_signature
    assert not usage(server).key_cert_sign
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.not_valid_after_utc - server.not_valid_before_utc == dt.timedelta(days=730)

    for key_file, cert in (("ca.key.pem", ca), ("server.key.pem", server)):
        path = pki / key_file
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, key_file
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == cert.public_key(), key_file


def test_init_defaults_to_this_machine_localhost_and_loopback(tmp_path: Path) -> None:
    code, output = certs("init", "--dir", str(tmp_path), "--key-type", "rsa")
    assert code == 0, output
    server = load(tmp_path / "server.pem")[0]
    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == [socket.gethostname(), "localhost"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert isinstance(server.public_key(), rsa.RSAPublicKey)
    assert usage(server).key_encipherment, "RSA key exchange for older peers"


def test_an_existing_ca_is_never_overwritten(tmp_path: Path) -> None:
    assert certs("init", "--dir", str(tmp_path))[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    code, output = certs("init", "--dir", str(tmp_path), "--host", "other")
    assert code == 2
    assert "already holds a CA, which is never overwritten" in output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    (tmp_path / "ca.pem").unlink()  # a half-copied CA folder: its key is still there
    code, output = certs("init", "--dir", str(tmp_path))
    assert code == 2
    assert (tmp_path / "ca.key.pem").read_bytes() == before["ca.key.pem"]


def test_issue_server_renews_from_the_same_ca(tmp_path: Path) -> None:
    assert certs("init", "--dir", str(tmp_path))[0] == 0
    old_server = load(tmp_path / "server.pem")[0]
    code, output = certs("issue-server", "--dir", str(tmp_path), "--host", "localhost")
    assert code == 0, output
    (ca,) = load(tmp_path / "ca.pem")
    server = load(tmp_path / "server.pem")[0]
    assert server.serial_number != old_server.serial_number
    verify_chain(server, ca, "server")
    assert stat.S_IMODE((tmp_path / "server.key.pem").stat().st_mode) == 0o600


def test_issue_client_names_the_edge_and_is_for_clients_only(tmp_path: Path) -> None:
    assert certs("init", "--dir", str(tmp_path))[0] == 0
    code, output = certs("issue-client", "press-7", "--dir", str(tmp_path))
    assert code == 0, output
    (ca,) = load(tmp_path / "ca.pem")
    (client,) = load(tmp_path / "clients" / "press-7.pem")
    verify_chain(client, ca, "client")
    with pytest.raises(x509.verification.VerificationError):
        verify_chain(client, ca, "server")
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "press-7"
    alt = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:shopfloor:edge:press-7"]
    assert edge_of_certificate(client) == "press-7"
    assert stat.S_IMODE((tmp_path / "clients" / "press-7.key.pem").stat().st_mode) == 0o600

    code, output = certs("issue-client", "press-7", "--dir", str(tmp_path))
    assert code == 2
    assert "exists: not overwritten" in output
    assert load(tmp_path / "clients" / "press-7.pem") == [client]
    assert certs("issue-client", "press-7", "--dir", str(tmp_path), "--force")[0] == 0
    assert load(tmp_path / "clients" / "press-7.pem") != [client]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue-client", "no/slash", "--dir", "{dir}"], "'no/slash' is not an edge id"),
        (["issue-client", "edge-1", "--dir", "{dir}/nowhere"], "no CA in"),
        (["init", "--dir", "{dir}/x", "--host", "bad host"], "'bad host' is neither"),
        (["init", "--dir", "{dir}/y", "--key-type", "dsa"], "--key-type must be ec or rsa"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, args: list[str], message: str) -> None:
    assert certs("init", "--dir", str(tmp_path))[0] == 0
    code, output = certs(*(a.replace("{dir}", str(tmp_path)) for a in args))
    assert code == 2
    assert message in output
    assert not (tmp_path / "x").exists(), "nothing is written for a bad name"


def test_the_demo_names_its_tls_options_before_starting(tmp_path: Path) -> None:
    assert certs("init", "--dir", str(tmp_path))[0] == 0
    demo = ["demo", "--no-status", "--data-dir", str(tmp_path / "data")]
    wrong_key = runner.invoke(
        app,
        [
            *demo,
            "--tls-cert",
            str(tmp_path / "server.pem"),
            "--tls-key",
            str(tmp_path / "ca.key.pem"),
        ],
    )
    alone = runner.invoke(app, [*demo, "--tls-cert", str(tmp_path / "server.pem")])
    assert wrong_key.exit_code == 2
    assert " ".join(wrong_key.output.split()).startswith(
        f"error: --tls-key: {tmp_path / 'ca.key.pem'} is not the private key of cert_file"
    )
    assert alone.exit_code == 2
    assert "--tls-cert and --tls-key go together" in alone.output
    assert not (tmp_path / "data").exists(), "nothing started"
