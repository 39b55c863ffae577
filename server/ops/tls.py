"""TLS and mutual TLS for the gRPC port, from PEM files named in the environment.

    VERSATIL_TLS_CERT=server.pem VERSATIL_TLS_KEY=server.key            # TLS
    ... VERSATIL_TLS_CLIENT_CA=clients-ca.pem                            # and client certificates

With a client CA, a client must present a certificate that CA signed, or the
handshake fails before any RPC; bearer tokens are still required on top of it.
"""
from __future__ import annotations

import grpc

from server.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The credentials of the port, or None for plaintext."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ValueError("VERSATIL_TLS_CLIENT_CA needs VERSATIL_TLS_CERT and VERSATIL_TLS_KEY too")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("TLS needs both VERSATIL_TLS_CERT and VERSATIL_TLS_KEY")
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def bind(server: grpc.Server, settings: Settings) -> int:
    """Add the port of ``settings.listen``, with TLS when configured; return its number."""
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(settings.listen)
    return server.add_secure_port(settings.listen, credentials)
