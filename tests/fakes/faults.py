"""What the fake LLM upstreams (`fake_anthropic`, `fake_openai`) share: recording the requests,
scripting replies and faults that are consumed one request at a time, and the small helpers of
building and streaming answers. Each fake keeps its own wire format and request rules.

Faults live in named FIFO queues behind one lock (the server thread and the test thread share
them). A streamed request takes one entry of each stream fault queue at once — its fault
snapshot — so faults scripted for later requests stay where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import threading
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.servers import serve_asgi


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None when the body was not JSON

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


@dataclass(frozen=True)
class Failure:
    """An injected error answer (see `fail_next` of each fake)."""

    status: int
    retry_after: float | None
    message: str
    code: str | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}


class FakeUpstream:
    """Recording and fault plumbing of a fake upstream. Subclasses serve their API on `self.app`
    and name their stream faults in `STREAM_FAULTS` (queue name → value when none is queued);
    the names are the keyword arguments of their stream writer."""

    STREAM_FAULTS: Mapping[str, Any] = {}
    FAILURE_STATUS = 503  # what `fail_next()` answers when no status is given

    def __init__(self, api_key: str, default_reply: str | None) -> None:
        self.api_key = api_key
        self.default_reply = default_reply
        self.base_url = ""  # set by serving()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()  # the server thread and the test thread share the queues
        self._queues: defaultdict[str, deque[Any]] = defaultdict(deque)
        # Consulted when no reply is queued: request body -> a reply, or None for the default one.
        self.responder: Callable[[Any], Any] | None = None

    # --- scripting -------------------------------------------------------------------------
    def enqueue(self, *replies: Any) -> None:
        self._push("reply", replies)

    def fail_next(
        self,
        status: int | None = None,
        times: int = 1,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        code: str | None = None,
    ) -> None:
        """The next `times` requests get `status` (default `FAILURE_STATUS`) with an error body
        in the API's shape (`code` e.g. "insufficient_quota", where the API has codes)."""
        status = self.FAILURE_STATUS if status is None else status
        self._push("failure", [Failure(status, retry_after, message or f"fake upstream error {status}", code)] * times)

    def delay_headers(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests wait `seconds` before any response byte."""
        self._push("header_delay", [seconds] * times)

    def slow_stream(self, seconds_per_event: float, times: int = 1) -> None:
        """The next `times` streams sleep between events (chunks)."""
        self._push("seconds_per_event", [seconds_per_event] * times)

    def hold_stream_after(self, n_events: int) -> threading.Event:
        """The next stream sends `n_events` events (chunks), then waits until the returned event
        is set (at most `GATE_LIMIT_S`): a test can act while an answer is provably unfinished."""
        gate = threading.Event()
        self._push("gate", [(n_events, gate)])
        return gate

    def break_stream_after(self, n_events: int, times: int = 1) -> None:
        """The next `times` streams send `n_events` events (chunks), then drop the connection."""
        self._push("break_after", [n_events] * times)

    def malformed_json(self, times: int = 1) -> None:
        """The next `times` non-streaming answers are a 200 whose body is not JSON."""
        self._push("malformed_json", [True] * times)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queues.clear()
            self.responder = None

    def _push(self, queue: str, values: Iterable[Any]) -> None:
        with self._lock:
            self._queues[queue].extend(values)

    # --- serving (the methods below that say so must be called holding `self._lock`) -------
    def _take(self, queue: str, default: Any = None) -> Any:
        """The next scripted value of `queue`, or `default`. Holds the lock."""
        values = self._queues.get(queue)
        return values.popleft() if values else default

    def _record(self, request: Request, raw: bytes) -> tuple[Any, dict[str, str], int]:
        """Record a request; returns its parsed body, lower-cased headers and 1-based number.
        Holds the lock."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.scope["path"], headers, body))
        return body, headers, len(self.requests)

    def _take_reply(self, streaming: bool, body: Any = None) -> tuple[Any, dict[str, Any]]:
        """The next scripted reply (else the responder's) and this request's fault snapshot.
        Holds the lock."""
        reply = self._take("reply")
        if reply is None and self.responder is not None:
            reply = self.responder(body)
        if streaming:
            return reply, {name: self._take(name, default) for name, default in self.STREAM_FAULTS.items()}
        return reply, {"malformed_json": True} if self._take("malformed_json", False) else {}


FakeT = TypeVar("FakeT", bound=FakeUpstream)


@contextlib.contextmanager
def serving(fake: FakeT) -> Iterator[FakeT]:
    """`fake` served on 127.0.0.1; `fake.base_url` is set inside the block."""
    with serve_asgi(fake.app) as base_url:  # type: ignore[attr-defined]
        fake.base_url = base_url
        yield fake


class AsgiEndpoint:
    """Starlette treats a non-function endpoint as a raw ASGI app: we need raw `send` to drop a
    connection mid-stream and to write malformed SSE."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._handler(scope, receive, send)


def json_answer(document: Any, headers: Mapping[str, str], snapshot: Mapping[str, Any]) -> Response:
    """The 200 of a non-streaming request: `document`, or a body that is not JSON if scripted."""
    if snapshot.get("malformed_json"):
        return Response("{this is not json", media_type="application/json")
    return JSONResponse(document, headers=dict(headers))


async def sleep_through(seconds: float) -> bool:
    """A pause between stream events that ignores the client (see `client_left_during`)."""
    await asyncio.sleep(seconds)
    return False


async def send_event_stream(
    send: Any,
    frames: Sequence[bytes],
    *,
    headers: Mapping[str, str],
    seconds_per_event: float,
    break_after: int | None,
    malformed_after: int | None,
    malformed_frame: bytes,
    error_after: int | None,
    error_frame: bytes,
    trailer: bytes = b"",
    pause: Callable[[float], Awaitable[bool]] = sleep_through,
    gate: tuple[int, threading.Event] | None = None,
) -> None:
    """A 200 SSE answer of encoded `frames` with one request's stream faults applied: dropped
    after `break_after` frames, `error_frame` as the last frame after `error_after`, a
    `malformed_frame` slipped in before frame `malformed_after`, `pause` (which returns True
    when the client has left) between frames, and a wait before frame `gate[0]` until `gate[1]`
    is set. `trailer` (e.g. `data: [DONE]`) follows a whole
    stream."""
    head = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    head += [(name.encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": 200, "headers": head})

    async def body(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    for count, frame in enumerate(frames):
        if count == break_after:
            return  # returning without the final body message makes uvicorn drop the connection
        if count == error_after:
            await body(error_frame)
            break
        if count == malformed_after:
            await body(malformed_frame)
        if count and seconds_per_event and await pause(seconds_per_event):
            return
        if gate is not None and count == gate[0]:
            await _opened(gate[1])
        await body(frame)
    else:
        if trailer:
            await body(trailer)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


GATE_LIMIT_S = 60.0  # a gate a failed test never opened must not hold the fake server forever


async def _opened(gate: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATE_LIMIT_S
    while not gate.is_set() and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def client_left_during(request: Request, seconds: float) -> bool:
    """Wait `seconds`, watching for the client to disconnect meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return True
    return False


# --- building answers ----------------------------------------------------------------------
def tokens_for(body: dict[str, Any], keys: Iterable[str]) -> int:
    """The fakes' token estimate: ceil(bytes of the compact JSON of those fields / 4), at least 1."""
    counted = {key: body.get(key) for key in keys}
    return max(1, math.ceil(len(json.dumps(counted, separators=(",", ":")).encode()) / 4))


def reply_digest(body: Any, number: int) -> str:
    """A stable hex digest of a request and its number: the source of the fakes' ids."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode() + str(number).encode()).hexdigest()


def last_user_text(body: dict[str, Any], items: str = "messages", text_part: str = "text") -> str:
    """The text of the last user message that has text (string content, or its `text_part` parts
    joined): a turn of tool results only is skipped, as OpenAI's tool messages are not user ones.
    `items` names the conversation (Responses: "input", which may be one string)."""
    messages = body.get(items)
    if isinstance(messages, str):
        return messages
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        text = " ".join(part.get("text", "") for part in content or [] if part.get("type") == text_part)
        if text:
            return text
    return ""


def default_words(body: dict[str, Any], default_reply: str | None) -> list[str]:
    """The words of the unscripted reply: `default_reply`, or "Fake reply to: <last user text>"."""
    return (default_reply or f"Fake reply to: {last_user_text(body)}").split()


def pieces(text: str) -> list[str]:
    """Words with their following space, as a model streams them."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]] if text else []


def example_of(schema: Any, root: Any = None) -> Any:
    """A small JSON value that satisfies `schema` (the subset structured outputs allow: objects,
    arrays, scalars, enums, const, anyOf, local $refs): what a fake model answers when a request
    asks for structured output."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return example_of(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items") or {}, root)] * max(1, schema.get("minItems") or 1)
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "example")


def strict_schema_problem(schema: Any, where: str) -> str | None:
    """What OpenAI's strict mode refuses in a schema: an object that allows extra properties or
    leaves a property optional. None when the schema is acceptable."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("type") == "object" or "properties" in node:
            if node.get("additionalProperties") is not False:
                return f"Invalid schema for {where}: 'additionalProperties' is required to be supplied and to be false."
            missing = set(node.get("properties") or {}) - set(node.get("required") or [])
            if missing:
                return f"Invalid schema for {where}: 'required' is required to include every property; missing {sorted(missing)}."
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return None
