"""Idempotency-Key (API.md §12): a retry with the same key and body replays the first answer.

Stored answers can hold a minted key's secret or a user's conversation, so they are sealed
(AES-GCM) under a key derived from the caller's Idempotency-Key, which is itself stored only as
a SHA-256: the store alone cannot read an answer back; a retry presenting the same
Idempotency-Key can. (Use random Idempotency-Keys, e.g. UUIDs, as every API asks.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from threadgate.domain.errors import Conflict, GatewayError, InvalidRequest
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

TTL_MS = 24 * 3600 * 1000
Outcome = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Claim:
    """An Idempotency-Key this request now owns: its stored scope and the sealing key."""

    scope: str
    idempotency_key: str

    def _aead(self) -> Any:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(hashes.SHA256(), 32, salt=None, info=b"threadgate idempotency " + self.scope.encode()).derive(
            self.idempotency_key.encode()
        )
        return AESGCM(key)

    def seal(self, answer: dict[str, Any]) -> dict[str, str]:
        nonce = os.urandom(12)
        sealed = self._aead().encrypt(nonce, json.dumps(answer).encode(), self.scope.encode())
        return {"sealed": base64.b64encode(nonce + sealed).decode()}

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        raw = base64.b64decode(stored["sealed"])
        return json.loads(self._aead().decrypt(raw[:12], raw[12:], self.scope.encode()))


def idempotency_scope(key_id: str, method: str, path: str, idempotency_key: str) -> str:
    """Keys are per API key and per route: another caller's key never replays our answer. The
    Idempotency-Key itself is kept only as a hash (it is what unseals the stored answer)."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{key_id}:{method}:{path}:{digest}"


def claim_key(
    request: Request, rt: Runtime, p: Principal, body: BaseModel | dict[str, Any]
) -> tuple[Claim | None, JSONResponse | None]:
    """(the claim to complete or abandon later, or None) and a replayed response on a repeat.
    `body` is the checked model, or the raw body where it is forwarded whole (passthrough)."""
    idem = request.headers.get("idempotency-key")
    if idem is None:
        return None, None
    if not 1 <= len(idem) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    claim = Claim(idempotency_scope(p.key_id, request.method, request.url.path, idem), idem)
    scope = claim.scope
    if isinstance(body, dict):
        payload = {k: v for k, v in body.items() if k != "stream"}
    else:
        payload = body.model_dump(mode="json", exclude={"stream"})
    body_hash = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    now = rt.clock.now_ms()
    existing = rt.stores.idempotency.claim(scope, body_hash, now, TTL_MS)
    if existing is not None and existing.state != "done" and now - existing.created_at > rt.settings.reservation_ttl_ms:
        # Its owner died without completing or abandoning (a crash, a Lambda timeout): no
        # request runs longer than a reservation lives, so a retry takes the key over.
        rt.stores.idempotency.abandon(scope)
        existing = rt.stores.idempotency.claim(scope, body_hash, now, TTL_MS)
    if existing is None:
        return claim, None
    if existing.body_hash != body_hash:
        raise Conflict("Idempotency-Key was already used with a different body", param="Idempotency-Key")
    if existing.state != "done":
        raise Conflict("a request with this Idempotency-Key is still in progress", param="Idempotency-Key")
    stored = claim.open(existing.response or {})
    headers = {**stored.get("headers", {}), "idempotent-replayed": "true"}
    return None, JSONResponse(stored.get("body"), status_code=existing.status_code or 200, headers=headers)


def complete(rt: Runtime, claim: Claim | None, status: int, body: Any, headers: dict[str, str]) -> None:
    if claim is not None:
        rt.stores.idempotency.complete(claim.scope, status, claim.seal({"body": body, "headers": headers}))


def abandon(rt: Runtime, claim: Claim | None) -> None:
    """Give the key back: a failed request may be retried with the same Idempotency-Key."""
    if claim is not None:
        rt.stores.idempotency.abandon(claim.scope)


async def idempotent(
    request: Request, rt: Runtime, p: Principal, body: BaseModel, run: Callable[[], Awaitable[Outcome]]
) -> JSONResponse:
    claim, replay = claim_key(request, rt, p, body)
    if replay is not None:
        return replay
    try:
        status, out, headers = await run()
    except GatewayError:
        abandon(rt, claim)
        raise
    complete(rt, claim, status, out, headers)
    return JSONResponse(out, status_code=status, headers=headers)
