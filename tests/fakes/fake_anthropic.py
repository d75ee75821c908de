"""A scriptable fake of the Anthropic Messages API (`POST /v1/messages`), served over real HTTP.

It answers in the real wire format — JSON messages, and SSE streams of
`message_start, content_block_start, ping, content_block_delta…, content_block_stop,
message_delta, message_stop` — which `tests/integration/test_fake_anthropic_sdk.py` checks with
the official `anthropic` SDK.

    with running_fake_anthropic() as fake:
        fake.enqueue(FakeReply(tool_uses=[FakeToolUse("get_weather", {"city": "Paris"})]),
                     FakeReply(text="It is sunny."))
        fake.fail_next(status=529, times=2)        # faults are consumed one request at a time
        ... point the client at fake.base_url with api key fake.api_key ...
        fake.requests[-1].body["messages"]        # what was sent

Replies: scripted `FakeReply`s are served in order to requests that get past the injected
failures; when none is queued the default reply is `default_reply` (or "Fake reply to: <last
user text>"), cut to `max_tokens` words (stop_reason "max_tokens"). Default usage:
input_tokens = ceil(bytes of JSON {messages, system, tools} / 4), output_tokens = words + blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.servers import serve_asgi

FAKE_API_KEY = "sk-ant-fake-0123456789abcdef"
DEFAULT_MODEL = "claude-fake-1"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class FakeToolUse:
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # default: derived from the request and position


@dataclass(frozen=True)
class FakeReply:
    text: str | None = None
    tool_uses: Sequence[FakeToolUse] = ()
    thinking: str | None = None
    stop_reason: str | None = None  # default: "tool_use" when tool_uses, else "end_turn"
    input_tokens: int | None = None  # default: computed from the request
    output_tokens: int | None = None  # default: words + non-text blocks
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None when the body was not JSON

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    message: str


class FakeAnthropic:
    def __init__(self, api_key: str = FAKE_API_KEY, default_reply: str | None = None) -> None:
        self.api_key = api_key
        self.default_reply = default_reply
        self.base_url = ""  # set by running_fake_anthropic()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()  # the server thread and the test thread share the queues
        self._replies: deque[FakeReply] = deque()
        self._failures: deque[_Failure] = deque()
        self._header_delays: deque[float] = deque()
        self._slow_streams: deque[float] = deque()
        self._breaks: deque[int] = deque()
        self._malformed_sse: deque[int] = deque()
        self._error_events: deque[tuple[int, str]] = deque()
        self._malformed_json = 0
        self.app = Starlette(routes=[Route("/v1/messages", _AsgiEndpoint(self._messages), methods=["POST"])])

    # --- scripting -------------------------------------------------------------------------
    def enqueue(self, *replies: FakeReply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(
        self,
        status: int = 529,
        times: int = 1,
        *,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """The next `times` requests get `status` with an Anthropic error body."""
        failure = _Failure(status, retry_after, message or f"fake upstream error {status}")
        with self._lock:
            self._failures.extend([failure] * times)

    def delay_headers(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests wait `seconds` before any response byte."""
        with self._lock:
            self._header_delays.extend([seconds] * times)

    def slow_stream(self, seconds_per_event: float, times: int = 1) -> None:
        """The next `times` streams sleep between events."""
        with self._lock:
            self._slow_streams.extend([seconds_per_event] * times)

    def break_stream_after(self, n_events: int, times: int = 1) -> None:
        """The next `times` streams send `n_events` events, then drop the connection."""
        with self._lock:
            self._breaks.extend([n_events] * times)

    def malformed_sse(self, after_events: int = 0, times: int = 1) -> None:
        """The next `times` streams send a non-JSON `data:` line after `after_events` events."""
        with self._lock:
            self._malformed_sse.extend([after_events] * times)

    def error_event_after(self, n_events: int, error_type: str = "overloaded_error", times: int = 1) -> None:
        """The next `times` streams send an SSE `error` event after `n_events` events, then end
        (as upstream does when it gives up mid-answer)."""
        with self._lock:
            self._error_events.extend([(n_events, error_type)] * times)

    def malformed_json(self, times: int = 1) -> None:
        """The next `times` non-streaming answers are a 200 whose body is not JSON."""
        with self._lock:
            self._malformed_json += times

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            queues = (self._replies, self._failures, self._header_delays, self._slow_streams)
            for queue in queues + (self._breaks, self._malformed_sse, self._error_events):
                queue.clear()
            self._malformed_json = 0

    # --- serving ---------------------------------------------------------------------------
    async def _messages(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        # Everything this request will do is decided at once, on arrival: a handler still
        # sleeping after its client gave up must not consume faults scripted for later requests.
        with self._lock:
            self.requests.append(RecordedRequest(scope["path"], headers, body))
            number = len(self.requests)
            delay = self._header_delays.popleft() if self._header_delays else 0.0
            refusal = self._refusal(headers, body, number)
            if refusal is None:
                reply, faults = self._take_reply(streaming=bool(body.get("stream")))
        if delay:
            await asyncio.sleep(delay)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        message = _build_message(body, reply, self.default_reply, number)
        request_id = f"req_fake_{number:06d}"
        if not body.get("stream"):
            if faults.get("malformed_json"):
                await Response("{this is not json", media_type="application/json")(scope, receive, send)
            else:
                await JSONResponse(message, headers={"request-id": request_id})(scope, receive, send)
            return
        await _send_stream(send, message, request_id, **faults)

    def _refusal(self, headers: dict[str, str], body: Any, number: int) -> Response | None:
        """An error answer (auth, injected failure, invalid body), or None. Holds the lock."""
        if (
            headers.get("x-api-key") != self.api_key
            and headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(401, "invalid x-api-key", number)
        failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            extra = {} if failure.retry_after is None else {"retry-after": f"{failure.retry_after:g}"}
            return _error(failure.status, failure.message, number, extra)
        if not isinstance(body, dict):
            return _error(400, "There was an error parsing the body of your request", number)
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error(400, f"{name}: Field required", number)
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return _error(400, "max_tokens: Input should be greater than or equal to 1", number)
        return None

    def _take_reply(self, streaming: bool) -> tuple[FakeReply | None, dict[str, Any]]:
        """The next scripted reply and this request's stream faults. Holds the lock."""
        reply = self._replies.popleft() if self._replies else None
        faults: dict[str, Any] = {}
        if streaming:
            faults["seconds_per_event"] = self._slow_streams.popleft() if self._slow_streams else 0.0
            faults["break_after"] = self._breaks.popleft() if self._breaks else None
            faults["malformed_after"] = self._malformed_sse.popleft() if self._malformed_sse else None
            faults["error_event"] = self._error_events.popleft() if self._error_events else None
        elif self._malformed_json:
            self._malformed_json -= 1
            faults["malformed_json"] = True
        return reply, faults


class _AsgiEndpoint:
    """Starlette treats a non-function endpoint as a raw ASGI app: we need raw `send` to drop a
    connection mid-stream and to write malformed SSE."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._handler(scope, receive, send)


def _error(status: int, message: str, number: int, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = f"req_fake_{number:06d}"
    kind = _ERROR_TYPES.get(status, "api_error")
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id},
        status_code=status,
        headers={"request-id": request_id, **(headers or {})},
    )


# --- building answers ----------------------------------------------------------------------
def input_tokens_for(body: dict[str, Any]) -> int:
    counted = {key: body.get(key) for key in ("messages", "system", "tools")}
    return max(1, math.ceil(len(json.dumps(counted, separators=(",", ":")).encode()) / 4))


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(block.get("text", "") for block in content or [] if block.get("type") == "text")
    return ""


def _build_message(
    body: dict[str, Any], reply: FakeReply | None, default_reply: str | None, number: int
) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode() + str(number).encode()).hexdigest()
    if reply is None:
        words = (default_reply or f"Fake reply to: {last_user_text(body)}").split()
        cut = len(words) > body["max_tokens"]
        reply = FakeReply(
            text=" ".join(words[: body["max_tokens"]]), stop_reason="max_tokens" if cut else "end_turn"
        )
    content: list[dict[str, Any]] = []
    if reply.thinking is not None:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig_" + digest[:32]})
    if reply.text is not None:
        content.append({"type": "text", "text": reply.text})
    for position, tool in enumerate(reply.tool_uses):
        tool_id = tool.id or f"toolu_{digest[position * 2 : position * 2 + 24]}"
        content.append({"type": "tool_use", "id": tool_id, "name": tool.name, "input": tool.input})
    output_tokens = reply.output_tokens
    if output_tokens is None:
        output_tokens = max(
            1, len((reply.text or "").split()) + len(reply.tool_uses) + (reply.thinking is not None)
        )
    return {
        "id": f"msg_fake_{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or DEFAULT_MODEL,
        "content": content,
        "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens if reply.input_tokens is not None else input_tokens_for(body),
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "output_tokens": output_tokens,
        },
    }


def stream_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Anthropic SSE event sequence that streams `message`."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                **message,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        }
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            for piece in _pieces(block["text"]):
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
        elif block["type"] == "thinking":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            for piece in _pieces(block["thinking"]):
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": piece},
                    }
                )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                }
            )
        else:  # tool_use: the input arrives as JSON fragments, the first one empty (as upstream)
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
            )
            raw = json.dumps(block["input"])
            for fragment in [""] + [raw[i : i + 10] for i in range(0, len(raw), 10)]:
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    }
                )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    if message["content"]:
        events.insert(2, {"type": "ping"})  # upstream pings right after the first block opens
    return events


def _pieces(text: str) -> list[str]:
    """Words with their following space, as a model streams them."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]] if text else []


async def _send_stream(
    send: Any,
    message: dict[str, Any],
    request_id: str,
    *,
    seconds_per_event: float,
    break_after: int | None,
    malformed_after: int | None,
    error_event: tuple[int, str] | None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"request-id", request_id.encode()),
            ],
        }
    )
    for count, event in enumerate(stream_events(message)):
        if count == break_after:
            return  # returning without the final body message makes uvicorn drop the connection
        if error_event is not None and count == error_event[0]:
            error = {"type": "error", "error": {"type": error_event[1], "message": "Overloaded"}}
            frame = f"event: error\ndata: {json.dumps(error)}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": False})
            return
        if count == malformed_after:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: content_block_delta\ndata: {not json\n\n",
                    "more_body": True,
                }
            )
        if count and seconds_per_event:
            await asyncio.sleep(seconds_per_event)
        frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.contextmanager
def running_fake_anthropic(**kwargs: Any) -> Iterator[FakeAnthropic]:
    """A `FakeAnthropic(**kwargs)` served on 127.0.0.1; `fake.base_url` is set inside the block."""
    fake = FakeAnthropic(**kwargs)
    with serve_asgi(fake.app) as base_url:
        fake.base_url = base_url
        yield fake
