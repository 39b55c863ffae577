"""TLS and mutual TLS from PEM files, with certificates made by the test (cryptography's x509).

One CA signs the server's certificate and a client's; a second, unknown CA signs
an intruder's. Servers run in this process on the session database; one runs as
``python -m server`` with the variables an operator would set.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import create_server
from server.config import Settings
from server.ops import tls
from tests.support import ADMIN_TOKEN, ROOT, Api, authorized, refused

NOW = datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class Pair:
    key: bytes
    cert: bytes
    private: ec.EllipticCurvePrivateKey
    name: x509.Name


def _issue(common_name: str, issuer: Pair | None = None, server: bool = False, ca: bool = False) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.name if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer.private if issuer else key, hashes.SHA256())
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Pair(pem_key, cert.public_bytes(serialization.Encoding.PEM), key, name)


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    intruder: Pair
    files: dict[str, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = _issue("versatil test CA", ca=True)
    other_ca = _issue("someone else's CA", ca=True)
    pki = Pki(ca, _issue("localhost", ca, server=True), _issue("ci-pipeline", ca), _issue("intruder", other_ca), {})
    folder = tmp_path_factory.mktemp("pki")
    for name, data in {"ca.pem": ca.cert, "server.pem": pki.server.cert, "server.key": pki.server.key}.items():
        (folder / name).write_bytes(data)
        pki.files[name] = folder / name
    return pki


def _serve(pki: Pki, mutual: bool) -> Iterator[int]:
    settings = Settings(listen="127.0.0.1:0", pool_size=2, dev_token=ADMIN_TOKEN, tls_cert=pki.files["server.pem"],
                        tls_key=pki.files["server.key"], tls_client_ca=pki.files["ca.pem"] if mutual else None)
    service = create_server(settings)
    service.start()
    yield service.port
    service.stop(None)


@pytest.fixture(scope="module")
def tls_port(pki: Pki, database_url: str) -> Iterator[int]:
    yield from _serve(pki, mutual=False)


@pytest.fixture(scope="module")
def mtls_port(pki: Pki, database_url: str) -> Iterator[int]:
    yield from _serve(pki, mutual=True)


def _channel(port: int, pki: Pki, client: Pair | None = None, roots: bytes | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots or pki.ca.cert,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    return grpc.secure_channel(f"localhost:{port}", credentials)


def _healthy(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_serves_a_client_that_trusts_the_ca(tls_port: int, pki: Pki) -> None:
    with _channel(tls_port, pki) as channel:
        assert _healthy(channel)
        created = Api(authorized(channel)).create("Workflow")
        assert Api(authorized(channel)).call("Workflow", "GetWorkflow", id=created.id) == created


def test_tls_refuses_plaintext_and_a_client_that_does_not_trust_the_ca(tls_port: int, pki: Pki) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_port}") as plaintext:
        assert not _healthy(plaintext)
    with _channel(tls_port, pki, roots=pki.intruder.cert) as wrong_roots:
        assert not _healthy(wrong_roots)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_port: int, pki: Pki) -> None:
    with _channel(mtls_port, pki) as anonymous:
        assert not _healthy(anonymous)
    with _channel(mtls_port, pki, client=pki.intruder) as intruder:
        assert not _healthy(intruder)
    with _channel(mtls_port, pki, client=pki.client) as client:
        assert _healthy(client)
        api = Api(authorized(client))
        created = api.create("Workflow")
        assert api.call("Workflow", "GetWorkflow", id=created.id) == created
        # The certificate lets the client connect; RPCs still need a token.
        refused(lambda: Api(client).call("Workflow", "ListWorkflows", page_size=1), grpc.StatusCode.UNAUTHENTICATED)


def test_half_a_configuration_is_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        tls.server_credentials(Settings(tls_cert=pki.files["server.pem"]))
    with pytest.raises(ValueError, match="VERSATIL_TLS_CERT"):
        tls.server_credentials(Settings(tls_client_ca=pki.files["ca.pem"]))


@pytest.mark.slow
def test_python_m_server_serves_mutual_tls_from_the_environment(pki: Pki, database_url: str) -> None:
    env = {
        **os.environ, "DATABASE_URL": database_url, "VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_WORKERS": "1",
        "VERSATIL_METRICS_LISTEN": "off", "VERSATIL_DEV_TOKEN": ADMIN_TOKEN,
        "VERSATIL_TLS_CERT": str(pki.files["server.pem"]), "VERSATIL_TLS_KEY": str(pki.files["server.key"]),
        "VERSATIL_TLS_CLIENT_CA": str(pki.files["ca.pem"]),
    }
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port, seen = None, []
        while port is None:
            line = process.stderr.readline()
            assert line or process.poll() is None, "".join(seen)
            seen.append(line)
            found = re.search(r"serving on [\d.]+:(\d+)", line)
            port = int(found[1]) if found else None
        with _channel(port, pki, client=pki.client) as client:
            assert _healthy(client)
            assert Api(authorized(client)).create("Workflow").id
        with _channel(port, pki) as anonymous:
            assert not _healthy(anonymous)
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stderr.close()
