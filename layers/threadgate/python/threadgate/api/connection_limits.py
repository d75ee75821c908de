"""What one HTTP/1.1 connection may send before the app sees a request: the ONE place for the
server's request-line, header and timeout limits, and the guard that enforces them.

Why a guard in front of the parser: uvicorn's httptools protocol has no header limit at all (an
80 MB header was buffered and re-concatenated, stalling the event loop for seconds), h11's limit is
size-only and answers a bare 400, and the parser may change (the hot path may get another one).
So the guard sits between the socket and whichever uvicorn HTTP/1.1 protocol class is in use, and
reads only what it needs to find where each request head starts and ends: the blank line ending a
head, and the body's framing (Content-Length or chunked), written by hand because no parser exposes
its framing state. A request whose head breaks a limit is answered here, in the API's error
envelope (414 request line, 431 headers, 408 head too slow), and its connection closed; nothing
past the limit is buffered. A connection that never sends a request is closed after the idle time.

HTTP/2 (prior knowledge) is passed through untouched: its header limits are SETTINGS of its own.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

from threadgate.api.errors import envelope
from threadgate import jsoncodec


@dataclass(frozen=True)
class ConnectionLimits:
    max_request_line_bytes: int = 8 * 1024  # method, target and version: 414 past it
    max_head_bytes: int = 32 * 1024  # request line plus every header: 431 past it
    max_header_count: int = 100  # 431 past it
    head_timeout_s: float = 10.0  # from a head's first byte to its blank line: 408 past it
    idle_timeout_s: float = 5.0  # a connection with no request under way is closed after this
    linger_bytes: int = 1024 * 1024  # after refusing, read (and drop) at most this much...
    linger_s: float = 2.0  # ...for at most this long, so the client reads the answer, not a reset


LIMITS = ConnectionLimits()

_H2_PREFACE = b"PRI * HTTP/2.0\r\n"
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?$", re.I | re.M)
_CHUNKED = re.compile(rb"^transfer-encoding[ \t]*:.*chunked[ \t]*\r?$", re.I | re.M)
_OTHER_FRAMING = re.compile(rb"^(content-length|transfer-encoding)[ \t]*:", re.I | re.M)

HEAD, LENGTH_BODY, CHUNK_SIZE, CHUNK_DATA, TRAILER, OPAQUE = range(6)


@dataclass
class Refusal:
    status: int
    reason: str
    message: str
    path: str  # for the envelope's shape; "" when the request line never arrived


class RequestFraming:
    """Follows an HTTP/1.1 request stream and refuses a head that breaks `limits`. A stream it
    cannot frame (a malformed Content-Length, an h2 preface) becomes OPAQUE: it is then left to
    the parser, which answers malformed requests itself."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.state = HEAD
        self._buf = b""  # the head (or chunk-size / trailer line) read so far: bounded by limits
        self._remaining = 0  # body bytes still to skip
        self._last_chunk = False

    @property
    def inside_head(self) -> bool:
        return self.state == HEAD and bool(self._buf)

    def feed(self, data: bytes) -> Refusal | None:
        view = memoryview(data)
        while view and self.state != OPAQUE:
            if self.state == HEAD:
                view, refusal = self._head(view)
                if refusal is not None:
                    return refusal
            elif self.state in (LENGTH_BODY, CHUNK_DATA):
                step = min(self._remaining, len(view))
                self._remaining -= step
                view = view[step:]
                if self._remaining == 0:
                    self.state = CHUNK_SIZE if self.state == CHUNK_DATA else HEAD
            else:  # CHUNK_SIZE or TRAILER: one CRLF-terminated line at a time
                view = self._line(view)
        return None

    def _head(self, view: memoryview) -> tuple[memoryview, Refusal | None]:
        if not self._buf:  # empty lines between requests are allowed (RFC 9112 2.2)
            while len(view) and view[0] in (13, 10):
                view = view[1:]
            if not view:
                return view, None
        before = len(self._buf)
        taken = bytes(view[: self.limits.max_head_bytes + 4 - before])  # room to see a terminator at the limit
        self._buf += taken
        end = self._buf.find(b"\r\n\r\n", max(0, before - 3))
        head = self._buf if end < 0 else self._buf[: end + 2]
        line_end = head.find(b"\r\n")
        if (line_end if line_end >= 0 else len(head)) > self.limits.max_request_line_bytes:
            return view, self._refuse(414, "URI Too Long", f"request line over {self.limits.max_request_line_bytes} bytes")
        if head.count(b"\r\n") - 1 > self.limits.max_header_count:
            return view, self._refuse(431, "Request Header Fields Too Large",
                                      f"more than {self.limits.max_header_count} request headers")
        if (len(self._buf) if end < 0 else end + 4) > self.limits.max_head_bytes:
            return view, self._refuse(431, "Request Header Fields Too Large",
                                      f"request headers over {self.limits.max_head_bytes} bytes")
        if end < 0:
            return view[len(taken):], None
        self._framing(head)
        self._buf = b""
        return view[end + 4 - before :], None

    def _framing(self, head: bytes) -> None:
        if head.startswith(_H2_PREFACE):
            self.state = OPAQUE
            return
        if _CHUNKED.search(head):
            self.state, self._last_chunk = CHUNK_SIZE, False
            return
        length = _CONTENT_LENGTH.findall(head)
        if len(length) == 1 and len(_OTHER_FRAMING.findall(head)) == 1:
            self.state, self._remaining = (LENGTH_BODY, int(length[0])) if int(length[0]) else (HEAD, 0)
        elif _OTHER_FRAMING.search(head):
            self.state = OPAQUE  # ambiguous or malformed framing: the parser refuses it
        else:
            self.state = HEAD  # no body

    def _line(self, view: memoryview) -> memoryview:
        end = bytes(view[:4096]).find(b"\n")
        if end < 0:
            self._buf += bytes(view)
            if len(self._buf) > 4096:
                self.state = OPAQUE  # a chunk line this long is malformed: the parser says so
            return view[len(view):]
        line, view = (self._buf + bytes(view[:end])).rstrip(b"\r"), view[end + 1 :]
        self._buf = b""
        if self.state == TRAILER:
            if not line:
                self.state = HEAD
            return view
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            self.state = OPAQUE
            return view
        if size == 0:
            self.state = TRAILER
        else:
            self.state, self._remaining = CHUNK_DATA, size + 2  # the data and its CRLF
        return view

    def _refuse(self, status: int, reason: str, message: str) -> Refusal:
        line = self._buf.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        path = parts[1].decode("latin-1") if len(parts) == 3 and len(line) <= self.limits.max_request_line_bytes else ""
        return Refusal(status, reason, message, path)


def refusal_bytes(refusal: Refusal) -> bytes:
    err_type = "request_too_large" if refusal.status in (414, 431) else "invalid_request_error"
    body = jsoncodec.dumps(envelope(refusal.path, err_type, refusal.message))
    request_id = ("req_" + secrets.token_hex(12)).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
        b"request-id: %s\r\nx-request-id: %s\r\n\r\n"
        % (refusal.status, refusal.reason.encode(), len(body), request_id, request_id)
    ) + body


def guarded(protocol_class: type[asyncio.Protocol], limits: ConnectionLimits = LIMITS) -> type[asyncio.Protocol]:
    """`protocol_class` (any uvicorn HTTP/1.1 protocol) with `limits` enforced in front of it."""

    class Guarded(protocol_class):  # type: ignore[misc, valid-type]
        _framing: RequestFraming
        _timer: asyncio.TimerHandle | None = None
        _refused = False
        _lingered = 0

        def connection_made(self, transport: Any) -> None:
            self._framing = RequestFraming(limits)
            super().connection_made(transport)
            self._arm(limits.idle_timeout_s, self._idle)

        def data_received(self, data: bytes) -> None:
            if self._refused:  # lingering: drop what the client still sends
                self._lingered += len(data)
                if self._lingered > limits.linger_bytes:
                    self.transport.abort()
                return
            was_idle = self._framing.state == HEAD and not self._framing.inside_head
            refusal = self._framing.feed(data)
            if refusal is not None:
                return self._refuse(refusal)
            if self._framing.inside_head:
                if was_idle or self._timer is None:
                    self._arm(limits.head_timeout_s, self._too_slow)
            else:
                self._disarm()
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _refuse(self, refusal: Refusal) -> None:
            self._refused = True
            self.transport.write(refusal_bytes(refusal))
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self._arm(limits.linger_s, self.transport.abort)
            else:
                self.transport.close()

        def _too_slow(self) -> None:
            self._timer = None
            self._refuse(Refusal(408, "Request Timeout",
                                 f"request head not received within {limits.head_timeout_s:g} s", ""))

        def _idle(self) -> None:  # armed only until the first byte of the first request
            self._timer = None
            self.transport.close()

        def _arm(self, delay: float, callback: Any) -> None:
            self._disarm()
            self._timer = self.loop.call_later(delay, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{protocol_class.__name__}"
    return Guarded


def uvicorn_options(limits: ConnectionLimits = LIMITS, http: str = "auto") -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that put `limits` in force."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    return {
        "http": guarded(import_from_string(HTTP_PROTOCOLS[http]), limits),
        "timeout_keep_alive": limits.idle_timeout_s,
        "h11_max_incomplete_event_size": limits.max_head_bytes,  # h11's own, should it be chosen
    }
