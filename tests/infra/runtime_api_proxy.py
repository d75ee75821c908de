"""The small proxy between Lambda Web Adapter (and our app) and cargo-lambda's Runtime API emulator.

Why it exists: the emulator serves the Runtime and Extensions APIs under `/.rt/...` and wants
`AWS_LAMBDA_RUNTIME_API=http://host:port/.rt`, while LWA (like AWS) expects a bare `host:port`
(with the path it panics with InvalidUri; with the scheme it builds `http://http://...`). The proxy
listens on a bare `host:port` and rewrites each request line's `/2018-06-01/...` (Runtime API)
and `/2020-01-01/...` (Extensions API) to `/.rt/...`; every other byte passes through unchanged,
in both directions, as it arrives (streamed bodies stay streamed).

It also plays the one part of Lambda the emulator leaves out: FREEZING. Lambda freezes the
execution environment once the runtime and every extension registered for INVOKE have asked for
their next event, and thaws it to deliver one (docs: "Lambda execution environment lifecycle").
The proxy sees those requests go by, so it stops the sandbox's processes (SIGSTOP) at that moment
and resumes them (SIGCONT) before relaying the next event. Work an app leaves running after its
invocation is over therefore stands still here, as on AWS, until the next invocation.

Hand-written because it must rewrite request targets inside live HTTP/1.1 connections
(keep-alive, chunked bodies) without buffering them, and see where each message ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field

REWRITTEN = (b"/2018-06-01/", b"/2020-01-01/")
RUNTIME_NEXT = "/2018-06-01/runtime/invocation/next"
EXTENSION_NEXT = "/2020-01-01/extension/event/next"
EXTENSION_REGISTER = "/2020-01-01/extension/register"
RUNTIME_INVOCATION = "/2018-06-01/runtime/invocation/"
_REFUSED = b'{"errorMessage":"Extension registration refused","errorType":"Extension.Refused"}'
REFUSAL = (b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
           % len(_REFUSED)) + _REFUSED


@dataclass
class Call:
    """One request that went through: when its head arrived (time.monotonic) and what it was."""

    at: float
    method: str
    path: str
    extension: str | None  # Lambda-Extension-Identifier (Lambda-Extension-Name when registering)
    body: bytes = b""  # kept for registrations only
    body_done_at: float | None = None  # when the last byte of its body went through (None: broken)

    @property
    def is_upload(self) -> bool:
        """A response (or error) sent to the Runtime API, possibly streamed."""
        return self.method == "POST" and self.path.startswith(RUNTIME_INVOCATION)


@dataclass
class Sandbox:
    """The lifecycle the proxy observes, and the processes it freezes."""

    pids: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    freezes: list[float] = field(default_factory=list)
    refused_extensions: set[str] = field(default_factory=set)  # names whose registration fails
    invoke_subscribers: set[str] = field(default_factory=set)  # extension identifiers
    uploads: int = 0  # responses on their way to the Runtime API
    runtime_waiting: bool = False
    extensions_waiting: set[str] = field(default_factory=set)
    frozen: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: Call) -> None:
        """The head of `call` went through."""
        with self.lock:
            self.calls.append(call)
            if call.is_upload:
                self.uploads += 1

    def sent(self, call: Call) -> None:
        """`call` went through whole, or its connection broke on the way."""
        with self.lock:
            if call.is_upload:
                self.uploads -= 1
            elif call.path == RUNTIME_NEXT:
                self.runtime_waiting = True
            elif call.path == EXTENSION_NEXT and call.extension:
                self.extensions_waiting.add(call.extension)
            else:
                return
            # The runtime is done once it asked for the next event AND its last response went out
            # (LWA asks while a streamed response is still flowing: the emulator answers its
            # upload at once, AWS ends an invocation only with its response).
            done = self.runtime_waiting and not self.uploads and self.invoke_subscribers <= self.extensions_waiting
            if done and not self.frozen:
                self.frozen = True
                self.freezes.append(time.monotonic())
                self._signal(signal.SIGSTOP)

    def answered(self, call: Call, headers: dict[str, str]) -> None:
        """The answer to `call` starts. For a long poll that is an event: Lambda thaws first."""
        with self.lock:
            if call.path == EXTENSION_REGISTER and "INVOKE" in json.loads(call.body or b"{}").get("events", []):
                self.invoke_subscribers.add(headers.get("lambda-extension-identifier", ""))
            elif call.path == RUNTIME_NEXT:
                self.runtime_waiting = False
            elif call.path == EXTENSION_NEXT and call.extension:
                self.extensions_waiting.discard(call.extension)
            else:
                return
            self._thaw_locked()

    def thaw(self) -> None:
        with self.lock:
            self._thaw_locked()

    def _thaw_locked(self) -> None:
        if self.frozen:
            self.frozen = False
            self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


class RuntimeApiProxy:
    """`with RuntimeApiProxy(emulator_port, sandbox) as proxy:` → AWS_LAMBDA_RUNTIME_API=proxy.address"""

    def __init__(self, upstream_port: int, sandbox: Sandbox, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.sandbox = sandbox
        self.host = host
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="runtime-api-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> RuntimeApiProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, self.host, 0), self._loop
        ).result(timeout=10)
        self.address = f"{self.host}:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        pending: list[Call] = []  # requests sent on this connection whose answer has not started
        tasks = [asyncio.ensure_future(self._requests(client_r, up_w, pending, client_w)),
                 asyncio.ensure_future(self._answers(up_r, client_w, pending))]
        # Either side closing (or the proxy stopping) ends the connection: a plain return, since
        # asyncio's stream server logs any exception, cancellation included, a handler ends with.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, up_w):
            with contextlib.suppress(Exception):
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        pending: list[Call], client: asyncio.StreamWriter) -> None:
        """Client → emulator, one request after another, each request line rewritten."""
        while head := await _read_head(reader):
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.split(b" ", 2)
            if target.startswith(REWRITTEN):
                target = b"/.rt" + target
            headers = _headers(rest)
            call = Call(time.monotonic(), method.decode(), target.decode().removeprefix("/.rt"),
                        headers.get("lambda-extension-identifier") or headers.get("lambda-extension-name"))
            if call.path == EXTENSION_REGISTER and call.extension in self.sandbox.refused_extensions:
                await reader.readexactly(int(headers.get("content-length", "0")))
                client.write(REFUSAL)  # as Lambda refuses a registration after init
                await client.drain()
                continue
            self.sandbox.record(call)
            pending.append(call)  # answers come back in request order
            try:
                writer.write(b" ".join((method, target, version)) + b"\r\n" + rest)
                call.body = await _relay_body(reader, writer, headers, keep=call.path == EXTENSION_REGISTER)
                call.body_done_at = time.monotonic()
            finally:
                self.sandbox.sent(call)

    async def _answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       pending: list[Call]) -> None:
        """Emulator → client, answer after answer, as they arrive."""
        while head := await _read_head(reader):
            headers = _headers(head.partition(b"\r\n")[2])
            if pending:
                self.sandbox.answered(pending.pop(0), headers)
            writer.write(head)
            await _relay_body(reader, writer, headers, until_eof=True)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                      *, keep: bool = False, until_eof: bool = False) -> bytes:
    """Forward one message body piece by piece as it arrives; returns it if `keep`. A message with
    neither length nor chunking has no body, except an answer, which then runs to the end of the
    connection (`until_eof`)."""
    kept = bytearray()
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            writer.write(size_line)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                break
            chunk = await reader.readexactly(size + 2)
            writer.write(chunk)
            await writer.drain()
            if keep:
                kept += chunk[:-2]
    elif "content-length" in headers:
        kept += await reader.readexactly(int(headers["content-length"]))
        writer.write(bytes(kept))
    elif until_eof:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    await writer.drain()
    return bytes(kept) if keep else b""


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for raw in block.split(b"\r\n"):
        name, sep, value = raw.partition(b":")
        if sep:
            out[name.strip().lower().decode()] = value.strip().decode()
    return out
