"""A scriptable webhook receiver (the app's tool endpoint), served over real HTTP.

    with running_webhook_receiver(secret="wsk_...") as receiver:
        url = receiver.url("/flaky/2")            # 503 twice per delivery id, then answers
        ... register a tool with that URL, or call threadgate.webhooks.deliver() ...
        receiver.deliveries_for(tool_use_id)      # every POST that arrived, in order

Behaviours, chosen by path (POST only):
    /echo                 {"output": <the delivered input>, "is_error": false}
    /tool-error           {"output": "lookup failed: no such account", "is_error": true}
    /text                 text/plain "plain text answer"
    /slow/<seconds>       sleeps, then /echo
    /flaky/<n>            503 for the first n deliveries of each delivery id, then /echo
    /limited/<n>/<s>      429 with `Retry-After: <s>` for the first n deliveries of each id, then /echo
    /status/<code>        always <code> with an HTML error page (which must never reach the model)
    /big                  a 2 MiB body streamed in chunks without content-length
    /big-declared         a 2 MiB body with content-length
    /hang                 never answers (until the client goes away or `hang_s` passes)
    /redirect             302 to /echo
    anything set with `receiver.respond(path, ...)` answers that, verbatim

Every delivery is recorded (headers, raw body, attempt) and its signature checked with the public
helper `threadgate.webhooks.verify_request`: with the secret registered for its tool_id
(`receiver.secrets[tool_id] = ...`) or else `receiver.secret`. A bad signature is answered 401 like
a real receiver would; with no secret known the delivery is accepted and `signature_valid` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.servers import serve_asgi
from threadgate.webhooks import verify_request

BIG_BODY_BYTES = 2 * 1024 * 1024
ERROR_PAGE = "<html><body>Internal trace: db password hunter2 at line 42</body></html>"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # raw, exactly as received
    attempt: int  # X-Qlaud-Attempt (0 when missing or not a number)
    delivery_id: str | None  # X-Qlaud-Delivery
    signature_valid: bool | None
    received_at: float = 0.0  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Scripted:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    secret: str | None = None
    hang_s: float = 30.0
    base_url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)  # tool_id -> wsk_ secret
    deliveries: list[Delivery] = field(default_factory=list)
    _scripted: dict[str, _Scripted] = field(default_factory=dict)
    _failures: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def respond(
        self, path: str, *, status: int = 200, json_body: Any = None, body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer POSTs to `path` with this, verbatim (JSON when `json_body` is given)."""
        if json_body is not None:
            raw, content_type = json.dumps(json_body).encode(), "application/json"
        else:
            raw = body.encode() if isinstance(body, str) else (body or b"")
            content_type = "text/plain; charset=utf-8"
        self._scripted[path] = _Scripted(status, raw, {"content-type": content_type, **(headers or {})})

    def deliveries_for(self, delivery_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.delivery_id == delivery_id]

    @functools.cached_property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        delivery = self._record(request, body)
        if delivery.signature_valid is False:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        path = delivery.path
        if path in self._scripted:
            s = self._scripted[path]
            return Response(s.body, status_code=s.status, headers=s.headers)
        head, _, arg = path.lstrip("/").partition("/")
        if head == "slow":
            if not await self._sleep(request, float(arg)):
                return Response(status_code=499)
            return self._echo(delivery)
        if head in ("flaky", "limited"):
            times, _, retry_after = arg.partition("/")
            key = (path, delivery.delivery_id)
            with self._lock:
                self._failures[key] += 1
                failing = self._failures[key] <= int(times)
            if not failing:
                return self._echo(delivery)
            if head == "limited":
                return PlainTextResponse("slow down", status_code=429, headers={"retry-after": retry_after})
            return PlainTextResponse(ERROR_PAGE, status_code=503)
        if head == "status":
            return PlainTextResponse(ERROR_PAGE, status_code=int(arg))
        simple = {
            "echo": lambda: self._echo(delivery),
            "tool-error": lambda: JSONResponse({"output": "lookup failed: no such account", "is_error": True}),
            "text": lambda: PlainTextResponse("plain text answer"),
            "big": lambda: StreamingResponse(_big_chunks(), media_type="application/json"),
            "big-declared": lambda: Response(b"x" * BIG_BODY_BYTES, media_type="text/plain"),
            "redirect": lambda: RedirectResponse("/echo", status_code=302),
        }
        if head in simple:
            return simple[head]()
        if head == "hang":
            await self._sleep(request, self.hang_s)
            return Response(status_code=499)
        return PlainTextResponse("no such behaviour", status_code=404)

    def _record(self, request: Request, body: bytes) -> Delivery:
        headers = {k.lower(): v for k, v in request.headers.items()}
        attempt = headers.get("x-qlaud-attempt", "")
        secret = self.secret
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            secret = self.secrets.get(json.loads(body).get("tool_id"), self.secret)
        delivery = Delivery(
            path=request.url.path,
            headers=headers,
            body=body,
            attempt=int(attempt) if attempt.isdigit() else 0,
            delivery_id=headers.get("x-qlaud-delivery"),
            signature_valid=None if secret is None else verify_request(secret, body, request.headers),
            received_at=time.monotonic(),
        )
        with self._lock:
            self.deliveries.append(delivery)
        return delivery

    @staticmethod
    def _echo(delivery: Delivery) -> Response:
        return JSONResponse({"output": delivery.json.get("input"), "is_error": False})

    @staticmethod
    async def _sleep(request: Request, seconds: float) -> bool:
        """Sleep, but stop early when the client hangs up (so the server can shut down quickly)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True


async def _big_chunks():
    chunk = b"x" * 65536
    for _ in range(BIG_BODY_BYTES // len(chunk)):
        yield chunk


@contextlib.contextmanager
def running_webhook_receiver(secret: str | None = None, *, hang_s: float = 30.0) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=secret, hang_s=hang_s)
    with serve_asgi(receiver.app) as base_url:
        receiver.base_url = base_url
        yield receiver


def resolver_for(table: dict[str, list[str]]):
    """A `socket.getaddrinfo` stand-in for `deliver(resolver=...)`/`check_webhook_url(resolver=...)`:
    maps names to addresses without touching DNS (unknown names fail like NXDOMAIN)."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
        return [(family(a), socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]

    return resolve
