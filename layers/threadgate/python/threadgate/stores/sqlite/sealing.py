"""Webhook secrets sealed at rest in local mode, as the DynamoDB adapter's SecretBox seals them
with KMS: AES-256-GCM under a key kept in its own file (0600) beside the database, so a copy of the
database, its WAL or a backup without the key file reveals no secret. The key file must travel
with the database (back both up); losing it only means re-registering the tools."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from threadgate.local_files import private_key_file

SEALED_PREFIX = "sealed:v1:"  # what a sealed value starts with in the `secret` column
KEY_FILE = "secrets.key"


class LocalSecretBox:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> "LocalSecretBox":
        return cls(private_key_file(path))

    @classmethod
    def ephemeral(cls) -> "LocalSecretBox":
        """For an in-memory database: the key lives exactly as long as the data."""
        return cls(AESGCM.generate_key(bit_length=256))

    def seal(self, secret: str, context: dict[str, str]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), _aad(context))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, context: dict[str, str]) -> str:
        if not stored.startswith(SEALED_PREFIX):  # written in clear by a version before sealing
            return stored
        raw = base64.b64decode(stored[len(SEALED_PREFIX):])
        return self._aead.decrypt(raw[:12], raw[12:], _aad(context)).decode()


def _aad(context: dict[str, str]) -> bytes:
    # Binds a sealed secret to its row: copying it onto another tool makes it unreadable.
    return "\x00".join(f"{k}={context[k]}" for k in sorted(context)).encode()
