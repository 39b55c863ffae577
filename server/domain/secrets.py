"""Values under a ``secrets`` key (``Workflow.config``, ``CloudRunService.env``), encrypted at rest.

    VERSATIL_ENCRYPTION_KEYS=<newest>,<older>…   # base64 of 32 random bytes each
    python -m server.encryption new-key           # prints such a key
    python -m server.encryption rotate            # re-encrypts every stored secret with the newest key

A resource declares its secrets column (``server.domain.catalog``); the catalog
gives each such resource an ``EncryptsSecrets`` rule holding the process's
``KeyRing``, made once from the settings.

Each value under ``secrets`` is stored as ``"enc:v1:<key id>:<base64 nonce + AES-256-GCM
ciphertext>"`` of its JSON text; the associated data binds it to its resource, row,
column and name, so a ciphertext copied elsewhere does not decrypt. New writes use the
first key; a value sealed with any listed key still decrypts, and is re-sealed with
the first one when its row is written again (or by ``rotate``).

Admin callers read the values decrypted; everyone else reads ``MASK`` in their place.
An update that sends ``MASK`` back for a name keeps the value stored under that name,
so a reader's copy of a resource can be written back without erasing its secrets.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import models
from server.core import principal
from server.core.errors import FailedPrecondition
from server.core.resource import Resource
from server.core.rules import Record, Rule

log = logging.getLogger(__name__)

SECRETS = "secrets"
PREFIX = "enc:v1:"
MASK = "********"
KEY_BYTES = 32
NONCE_BYTES = 12


class BadKey(ValueError):
    """A configured key is not base64 of 32 bytes."""


class Unreadable(ValueError):
    """A sealed value that no configured key opens."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"versatil-secrets-key:" + key).hexdigest()[:8]


def parse_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raise BadKey("an encryption key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise BadKey(f"an encryption key must be {KEY_BYTES} bytes in base64, not {len(key)}")
    return key


class KeyRing:
    """The configured keys, newest first: the first seals, any of them opens."""

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}
        self.newest = key_id(keys[0]) if keys else None

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> KeyRing:
        return cls([parse_key(text) for text in texts])

    def seal(self, value: Any, context: str) -> str:
        if self.newest is None:
            raise FailedPrecondition(
                f"values under '{SECRETS}' are encrypted at rest, and this server has no encryption key "
                "(set VERSATIL_ENCRYPTION_KEYS)"
            )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.newest].encrypt(nonce, json.dumps(value).encode(), context.encode())
        return f"{PREFIX}{self.newest}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, text: str, context: str) -> Any:
        kid, _, payload = text[len(PREFIX):].partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise Unreadable(f"no configured key has id {kid}")
        try:
            raw = base64.b64decode(payload, validate=True)
            return json.loads(cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()))
        except (InvalidTag, binascii.Error, ValueError):
            raise Unreadable(f"the value sealed with key {kid} does not open here") from None

    def sealed_with_newest(self, text: str) -> bool:
        return text.startswith(f"{PREFIX}{self.newest}:")


def new_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class EncryptsSecrets(Rule):
    """Seals the values under ``<column>.secrets`` on write; opens or masks them on read."""

    pure = True  # Reads only the record (and the process's keys and caller).

    def __init__(self, resource: str, column: str, ring: KeyRing) -> None:
        self.resource = resource
        self.column = column
        self.ring = ring

    def _context(self, row_id: Any, name: str) -> str:
        return f"{self.resource}/{row_id}/{self.column}/{SECRETS}/{name}"

    def on_create(self, record: Record) -> None:
        record[self.column] = self._sealed(record["id"], record.get(self.column), None)

    def on_update(self, before: Record, changes: Record) -> None:
        if self.column in changes:
            changes[self.column] = self._sealed(before["id"], changes[self.column], before.get(self.column))

    def on_read(self, record: Record) -> None:
        document = record.get(self.column)
        if not isinstance(document, dict) or SECRETS not in document:
            return
        shown = principal.sees_everything()
        values = document[SECRETS]
        if isinstance(values, dict):
            opened = {name: self._shown(record["id"], name, value, shown) for name, value in values.items()}
        else:
            opened = self._shown(record["id"], "", values, shown)
        record[self.column] = {**document, SECRETS: opened}

    def _shown(self, row_id: Any, name: str, value: Any, shown: bool) -> Any:
        if not shown or not is_sealed(value):
            return MASK if not shown else value
        try:
            return self.ring.open(value, self._context(row_id, name))
        except Unreadable as error:
            log.warning("%s %s: %s.%s.%s stays masked: %s", self.resource, row_id, self.column, SECRETS, name, error)
            return MASK

    def _sealed(self, row_id: Any, document: Any, before: Any) -> Any:
        if not isinstance(document, dict) or SECRETS not in document:
            return document
        stored = before.get(SECRETS) if isinstance(before, dict) else None
        values = document[SECRETS]
        if isinstance(values, dict):
            previous = stored if isinstance(stored, dict) else {}
            sealed = {name: self._seal(row_id, name, value, previous.get(name)) for name, value in values.items()}
        else:
            sealed = self._seal(row_id, "", values, stored)
        return {**document, SECRETS: sealed}

    def _seal(self, row_id: Any, name: str, value: Any, stored: Any) -> Any:
        context = self._context(row_id, name)
        if is_sealed(stored) and (value == MASK or value == stored):
            # The value already stored is kept, re-sealed with the newest key if it was not.
            if self.ring.sealed_with_newest(stored):
                return stored
            try:
                return self.ring.seal(self.ring.open(stored, context), context)
            except Unreadable:
                return stored
        return self.ring.seal(value, context)


def rotate(resources: Iterable[Resource]) -> int:
    """Re-seal every stored secret of ``resources`` with the newest key; return how many rows changed."""
    changed = 0
    for resource in resources:
        for rule in resource.rules:
            if not isinstance(rule, EncryptsSecrets):
                continue
            field = resource.fields[rule.column]
            model = resource.model
            with models.database.connection_context(), models.database.atomic():
                for row in model.select(model.id, field).where(field.has_key(SECRETS)).for_update():
                    document = getattr(row, field.name)
                    resealed = rule._sealed(row.id, {**document}, document)
                    if resealed != document:
                        model.update({field: resealed}).where(model.id == row.id).execute()
                        changed += 1
    return changed
