"""Helpers for the security suites: in-process servers with tokens, and callers with roles.

    with secured_server(tmp_path, {"alice": "writer"}) as server:
        alice = server.api("alice")            # an Api whose channel sends alice's token
        alice.create("Prediction")

Tokens are made by ``python -m server.tokens add``, as an operator makes them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from server.app import create_server
from server.config import Settings
from tests.support import ROOT, Api, authorized


def add_token(tokens_file: Path, principal: str, role: str) -> str:
    """``python -m server.tokens add``: the token it prints once."""
    result = subprocess.run(
        [sys.executable, "-m", "server.tokens", "add", "--principal", principal, "--role", role],
        cwd=ROOT, env={**os.environ, "VERSATIL_TOKENS_FILE": str(tokens_file)},
        capture_output=True, text=True, check=True,
    )
    return result.stdout.strip()


@dataclass
class SecuredServer:
    port: int
    tokens_file: Path
    tokens: dict[str, str] = field(default_factory=dict)
    channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self, principal: str | None = None, token: str | None = None) -> grpc.Channel:
        """A channel sending ``principal``'s token (or ``token``), or none if neither is given."""
        raw = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(raw)
        token = token or (self.tokens[principal] if principal else None)
        return authorized(raw, token) if token else raw

    def api(self, principal: str | None = None, token: str | None = None) -> Api:
        return Api(self.channel(principal, token))


@contextmanager
def secured_server(tmp_path: Path, roles: dict[str, str], **settings: Any) -> Iterator[SecuredServer]:
    """An in-process server on the session database whose tokens give each principal its role."""
    tokens_file = tmp_path / "tokens.json"
    tokens = {principal: add_token(tokens_file, principal, role) for principal, role in roles.items()}
    config = replace(Settings(listen="127.0.0.1:0", pool_size=4, tokens_file=tokens_file), **settings)
    service = create_server(config)
    service.start()
    running = SecuredServer(service.port, tokens_file, tokens)
    try:
        yield running
    finally:
        for channel in running.channels:
            channel.close()
        service.stop(None)

