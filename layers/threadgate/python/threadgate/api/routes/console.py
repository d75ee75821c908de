"""/console: the operator console, static files from threadgate/console/ (API.md §13).

The console is a page that calls the public API with an admin key the operator types in (kept in
the browser's sessionStorage); these routes only serve its files. Served from memory with a
strict Content-Security-Policy (no inline script or style, nothing from another origin, no
framing) rather than through StaticFiles: the set of files is fixed and small, and every answer
must carry the same security headers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from threadgate.domain.errors import NotFound

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
    ".json": "application/json",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",  # revalidate (ETag): a new deploy is picked up at once
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=1)
def _assets() -> dict[str, _Asset]:
    """Every servable file under CONSOLE_DIR by its relative path, read on first use (never at
    import: a Lambda cold start that serves no console page pays nothing)."""
    out = {}
    for path in CONSOLE_DIR.rglob("*"):
        if path.is_file() and path.suffix in _TYPES:
            body = path.read_bytes()
            out[path.relative_to(CONSOLE_DIR).as_posix()] = _Asset(
                body, _TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            )
    return out


@router.get("/console")
def console_root() -> Response:
    # Relative, so it keeps whatever prefix the page was reached under (an API Gateway stage).
    return RedirectResponse("console/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/console/{path:path}")
def console_file(path: str, request: Request) -> Response:
    asset = _assets().get(path or "index.html")
    if asset is None:
        raise NotFound("no such console file")
    headers = {**SECURITY_HEADERS, "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
