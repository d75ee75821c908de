"""A scriptable fake of the OpenAI Chat Completions API (`POST /v1/chat/completions`), served
over real HTTP.

It answers in the real wire format — `chat.completion` JSON, and SSE streams of
`data: {chat.completion.chunk}\\n\\n` lines ending with `data: [DONE]`, plus the usage chunk
(empty `choices`) when `stream_options.include_usage` is set — which
`tests/integration/test_openai_provider.py` checks with the official `openai` SDK. It also
enforces the request rules of the real API that a translator can break (tool messages must
answer a preceding assistant `tool_calls`, every call must be answered, `stream_options` only
with `stream`, `tool_choice` only with `tools`), answering 400 like the real API does.

    with running_fake_openai() as fake:
        fake.enqueue(FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
                     FakeReply(text="It is sunny."))
        fake.fail_next(status=503, times=2)        # faults are consumed one request at a time
        ... point a client at fake.v1_url with api key fake.api_key ...
        fake.requests[-1].body["messages"]        # what was sent

Replies: scripted `FakeReply`s are served in order to requests that get past the injected
failures; when none is queued the reply is `default_reply` (or "Fake reply to: <last user
text>"), cut to `max_completion_tokens` (or `max_tokens`) words with finish_reason "length".
Default usage: prompt_tokens = ceil(bytes of JSON {messages, tools} / 4), completion_tokens =
words + tool calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.servers import serve_asgi

FAKE_API_KEY = "sk-proj-fake-0123456789abcdef"
DEFAULT_MODEL = "gpt-fake-1"
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)  # a str is sent verbatim
    id: str | None = None  # default: derived from the request and position


@dataclass(frozen=True)
class FakeReply:
    text: str | None = None
    tool_calls: Sequence[FakeToolCall] = ()
    refusal: str | None = None
    finish_reason: str | None = None  # default: "tool_calls" when tool_calls, else "stop"
    prompt_tokens: int | None = None  # default: computed from the request
    completion_tokens: int | None = None  # default: words + tool calls
    cached_tokens: int = 0


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
    code: str | None


class FakeOpenAI:
    def __init__(self, api_key: str = FAKE_API_KEY, default_reply: str | None = None) -> None:
        self.api_key = api_key
        self.default_reply = default_reply
        self.base_url = ""  # set by running_fake_openai(); the API root is `v1_url`
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()  # the server thread and the test thread share the queues
        self._replies: deque[FakeReply] = deque()
        self._failures: deque[_Failure] = deque()
        self._header_delays: deque[float] = deque()
        self._slow_streams: deque[float] = deque()
        self._breaks: deque[int] = deque()
        self._stream_errors: deque[int] = deque()
        self._malformed_sse: deque[int] = deque()
        self._missing_done = 0
        self._malformed_json = 0
        endpoint = _AsgiEndpoint(self._chat_completions)
        self.app = Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])

    @property
    def v1_url(self) -> str:
        """What OpenAI clients call `base_url` (OPENAI_BASE_URL): the root including /v1."""
        return self.base_url + "/v1"

    # --- scripting -------------------------------------------------------------------------
    def enqueue(self, *replies: FakeReply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(
        self,
        status: int = 503,
        times: int = 1,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        code: str | None = None,
    ) -> None:
        """The next `times` requests get `status` with an OpenAI error body (`code` e.g.
        "insufficient_quota")."""
        failure = _Failure(status, retry_after, message or f"fake upstream error {status}", code)
        with self._lock:
            self._failures.extend([failure] * times)

    def delay_headers(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests wait `seconds` before any response byte."""
        with self._lock:
            self._header_delays.extend([seconds] * times)

    def slow_stream(self, seconds_per_chunk: float, times: int = 1) -> None:
        """The next `times` streams sleep between chunks."""
        with self._lock:
            self._slow_streams.extend([seconds_per_chunk] * times)

    def break_stream_after(self, n_chunks: int, times: int = 1) -> None:
        """The next `times` streams send `n_chunks` chunks, then drop the connection."""
        with self._lock:
            self._breaks.extend([n_chunks] * times)

    def error_in_stream_after(self, n_chunks: int, times: int = 1) -> None:
        """The next `times` streams send `n_chunks` chunks, then an `{"error": …}` payload."""
        with self._lock:
            self._stream_errors.extend([n_chunks] * times)

    def malformed_sse(self, after_chunks: int = 0, times: int = 1) -> None:
        """The next `times` streams send a non-JSON `data:` line after `after_chunks` chunks."""
        with self._lock:
            self._malformed_sse.extend([after_chunks] * times)

    def omit_done(self, times: int = 1) -> None:
        """The next `times` streams end cleanly after the finish chunk, without usage or [DONE]."""
        with self._lock:
            self._missing_done += times

    def malformed_json(self, times: int = 1) -> None:
        """The next `times` non-streaming answers are a 200 whose body is not JSON."""
        with self._lock:
            self._malformed_json += times

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            queues = (self._replies, self._failures, self._header_delays, self._slow_streams, self._breaks,
                      self._stream_errors, self._malformed_sse)
            for queue in queues:
                queue.clear()
            self._missing_done = self._malformed_json = 0

    # --- serving ---------------------------------------------------------------------------
    async def _chat_completions(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self.requests.append(RecordedRequest(scope["path"], headers, body))
            number = len(self.requests)
            delay = self._header_delays.popleft() if self._header_delays else 0.0
        if delay and await _client_left_during(request, delay):
            return  # a client that gave up must not consume the faults queued for the next one
        response = self._refusal(headers, body, number)
        if response is not None:
            await response(scope, receive, send)
            return
        reply, faults = self._take_reply(streaming=bool(body.get("stream")))
        completion = build_completion(body, reply, self.default_reply, number)
        if not body.get("stream"):
            if faults.get("malformed_json"):
                await Response("{this is not json", media_type="application/json")(scope, receive, send)
            else:
                await JSONResponse(completion, headers=_request_id(number))(scope, receive, send)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await _send_stream(request, send, stream_chunks(completion, include_usage), number, **faults)

    def _refusal(self, headers: dict[str, str], body: Any, number: int) -> Response | None:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            # The real message names the key (masked); the gateway must never repeat it.
            shown = headers.get("authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {shown}.", number, code="invalid_api_key")
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            extra = {} if failure.retry_after is None else {"retry-after": f"{failure.retry_after:g}"}
            return _error(failure.status, failure.message, number, code=failure.code, headers=extra)
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", number)
        problem = request_problem(body)
        return None if problem is None else _error(400, problem, number)

    def _take_reply(self, streaming: bool) -> tuple[FakeReply | None, dict[str, Any]]:
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
            faults: dict[str, Any] = {}
            if streaming:
                faults["seconds_per_chunk"] = self._slow_streams.popleft() if self._slow_streams else 0.0
                faults["break_after"] = self._breaks.popleft() if self._breaks else None
                faults["error_after"] = self._stream_errors.popleft() if self._stream_errors else None
                faults["malformed_after"] = self._malformed_sse.popleft() if self._malformed_sse else None
                faults["omit_done"] = self._missing_done > 0
                self._missing_done = max(0, self._missing_done - 1)
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


def _request_id(number: int) -> dict[str, str]:
    return {"x-request-id": f"req_fake_{number:06d}"}


def _error(
    status: int, message: str, number: int, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    kind = {429: "requests", 500: "server_error", 503: "server_error"}.get(status, "invalid_request_error")
    if code == "insufficient_quota":
        kind = "insufficient_quota"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
        headers={**_request_id(number), **(headers or {})},
    )


# --- request rules the real API enforces ---------------------------------------------------
def request_problem(body: dict[str, Any]) -> str | None:
    """The 400 message the real API would give, or None when the request is acceptable."""
    for name in ("model", "messages"):
        if name not in body:
            return f"Missing required parameter: '{name}'."
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "Invalid 'messages': empty array. Expected an array with minimum length 1."
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"Invalid '{name}': integer below minimum value."
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    if not body.get("tools"):
        for name in ("tool_choice", "parallel_tool_calls"):
            if body.get(name) is not None:
                return f"Invalid value for '{name}': '{name}' is only allowed when 'tools' are specified."
    pending: set[str] = set()  # tool_call ids that still need their tool message
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            return f"Invalid value for 'messages[{i}].role'."
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'."
                )
            pending.discard(message["tool_call_id"])
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(sorted(pending))}"
            )
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if message.get("content") is None and not calls:
                return f"Invalid value for 'messages[{i}].content': expected a string, got null."
            for call in calls:
                if not isinstance(call.get("function", {}).get("arguments"), str):
                    return f"Invalid type for 'messages[{i}].tool_calls[].function.arguments': expected a string."
                pending.add(call.get("id"))
    if pending:
        return "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'."
    return None


# --- building answers ----------------------------------------------------------------------
def prompt_tokens_for(body: dict[str, Any]) -> int:
    counted = {key: body.get(key) for key in ("messages", "tools")}
    return max(1, math.ceil(len(json.dumps(counted, separators=(",", ":")).encode()) / 4))


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return ""


def build_completion(
    body: dict[str, Any], reply: FakeReply | None, default_reply: str | None, number: int
) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode() + str(number).encode()).hexdigest()
    if reply is None:
        words = (default_reply or f"Fake reply to: {last_user_text(body)}").split()
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or len(words)
        reply = FakeReply(text=" ".join(words[:limit]), finish_reason="length" if len(words) > limit else "stop")
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": reply.refusal, "annotations": []}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"call_{digest[position * 2 : position * 2 + 24]}",
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments),
                },
            }
            for position, call in enumerate(reply.tool_calls)
        ]
    completion_tokens = reply.completion_tokens
    if completion_tokens is None:
        completion_tokens = max(1, len((reply.text or "").split()) + len(reply.tool_calls))
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens_for(body)
    return {
        "id": f"chatcmpl-{digest[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake0001",
    }


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunk sequence that streams `completion`, shaped as the real API sends it."""
    envelope = {key: completion[key] for key in ("id", "created", "model", "service_tier", "system_fingerprint")}
    envelope["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            out["usage"] = None
        return out

    choice = completion["choices"][0]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    first_content = "" if message["content"] is not None or not calls else None
    first: dict[str, Any] = {"role": "assistant", "content": first_content, "refusal": None}
    chunks = [chunk(first)]
    for piece in _pieces(message["content"] or ""):
        chunks.append(chunk({"content": piece}))
    for piece in _pieces(message.get("refusal") or ""):
        chunks.append(chunk({"refusal": piece}))
    for index, call in enumerate(calls):
        function = {"name": call["function"]["name"], "arguments": ""}
        head = {"index": index, "id": call["id"], "type": "function", "function": function}
        chunks.append(chunk({"tool_calls": [head]}))
        raw = call["function"]["arguments"]
        for start in range(0, len(raw), 8):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[start : start + 8]}}]}))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**envelope, "choices": [], "usage": completion["usage"]})
    return chunks


def _pieces(text: str) -> list[str]:
    """Words with their following space, as a model streams them."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]] if text else []


async def _client_left_during(request: Request, seconds: float) -> bool:
    """Wait `seconds`, watching for the client to disconnect meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.05, left))
        if await request.is_disconnected():
            return True
    return False


async def _send_stream(
    request: Request,
    send: Any,
    chunks: list[dict[str, Any]],
    number: int,
    *,
    seconds_per_chunk: float,
    break_after: int | None,
    error_after: int | None,
    malformed_after: int | None,
    omit_done: bool,
) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    headers += [(name.encode(), value.encode()) for name, value in _request_id(number).items()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def frame(data: str) -> None:
        await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

    if omit_done:  # a clean end after the finish chunk: no usage chunk, no [DONE]
        chunks = [c for c in chunks if c["choices"]]
    for count, chunk in enumerate(chunks):
        if count == break_after:
            return  # returning without the final body message makes uvicorn drop the connection
        if count == error_after:
            message = "The server had an error while processing your request."
            await frame(json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}}))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if count == malformed_after:
            await frame("{not json")
        if count and seconds_per_chunk and await _client_left_during(request, seconds_per_chunk):
            return
        await frame(json.dumps(chunk))
    if not omit_done:
        await frame("[DONE]")
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.contextmanager
def running_fake_openai(**kwargs: Any) -> Iterator[FakeOpenAI]:
    """A `FakeOpenAI(**kwargs)` served on 127.0.0.1; `fake.base_url` is set inside the block."""
    fake = FakeOpenAI(**kwargs)
    with serve_asgi(fake.app) as base_url:
        fake.base_url = base_url
        yield fake
