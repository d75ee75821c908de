"""Webhook signatures: what the gateway signs and what a receiver checks.

Standard library only, so a receiver can depend on this module alone.

The gateway sends ``X-Qlaud-Timestamp`` (Unix seconds) and ``X-Qlaud-Signature`` = lowercase hex
``HMAC_SHA256(key=<the tool's wsk_ secret>, msg=b"<timestamp>." + <raw body bytes>)``.

A receiver verifies the RAW body bytes, before parsing JSON (re-serializing changes the bytes)::

    import os
    from fastapi import FastAPI, Request, Response
    from threadgate.webhooks import verify_request

    app = FastAPI()

    @app.post("/tools/lookup_account")
    async def lookup_account(request: Request):
        body = await request.body()
        if not verify_request(os.environ["WEBHOOK_SECRET"], body, request.headers):
            return Response(status_code=401)
        ...  # dedupe on request.headers["X-Qlaud-Delivery"], then answer {"output": ..., "is_error": false}
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Qlaud-Timestamp"
SIGNATURE_HEADER = "X-Qlaud-Signature"
DELIVERY_HEADER = "X-Qlaud-Delivery"
ATTEMPT_HEADER = "X-Qlaud-Attempt"

DEFAULT_TOLERANCE_S = 300
_MAX_TIMESTAMP_DIGITS = 12  # Unix seconds have 10 digits until the year 2286; longer is garbage


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Qlaud-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return _digest(secret, str(int(timestamp)), body)


def verify(
    secret: str,
    body: bytes,
    timestamp: str | int,
    signature: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``signature`` signs ``body`` at ``timestamp`` and the timestamp is within
    ``tolerance_s`` of ``now`` (either direction: a stale capture and a forged future time are both
    replays). Malformed header values give False, never an exception."""
    if isinstance(body, str):  # a programming error worth surfacing: str was already decoded/re-encoded
        raise TypeError("verify() needs the raw request body as bytes")
    if not secret or not isinstance(signature, str):
        return False  # an empty key would let anyone compute a valid signature
    timestamp_text = _timestamp_text(timestamp)
    if timestamp_text is None:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp_text)) > tolerance_s:
        return False
    expected = _digest(secret, timestamp_text, bytes(body))
    # Compare bytes: compare_digest refuses non-ASCII str, and a header may contain anything.
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace"))


def verify_request(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """`verify` with the timestamp and signature read from ``headers`` (any case; works with
    Starlette/FastAPI ``request.headers``, ``http.server`` headers, or a plain dict)."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if timestamp is None or signature is None:
        return False
    return verify(secret, body, timestamp, signature, tolerance_s=tolerance_s, now=now)


def _digest(secret: str, timestamp_text: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp_text.encode() + b"." + body, hashlib.sha256).hexdigest()


def _timestamp_text(timestamp: object) -> str | None:
    """The exact text that was signed, or None when it is not a plain non-negative integer."""
    if isinstance(timestamp, bool):
        return None
    if isinstance(timestamp, int):
        return str(timestamp) if timestamp >= 0 else None
    if not isinstance(timestamp, str):
        return None
    text = timestamp.strip()
    # isascii() first: str.isdigit() also accepts e.g. Arabic-Indic digits.
    if not text or len(text) > _MAX_TIMESTAMP_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return text


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive
        wanted = name.lower()
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted), None)
    return value if isinstance(value, str) else None
