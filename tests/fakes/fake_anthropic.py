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

It refuses what the real API refuses that a translator could send: fields the official SDK does
not send (besides the legacy sampling ones), temperature above 1, `tool_choice` without tools, a
thinking budget outside [1024, max_tokens), a malformed `output_config.format` (which is
answered with JSON that fits its schema).

Replies: scripted `FakeReply`s are served in order to requests that get past the injected
failures; when none is queued, `fake.responder(body)` decides if set (e.g.
`tool_calling_responder`), else the default reply is `default_reply` (or "Fake reply to: <last
user text>"), cut to `max_tokens` words (stop_reason "max_tokens"). Default usage:
input_tokens = ceil(bytes of JSON {messages, system, tools} / 4), output_tokens = words + blocks.

It refuses (400) the histories the real API refuses that a gateway can produce: a tool_use not
answered by the next message, a tool_result without its tool_use, a thinking block sent back
without its signature. Models whose id contains "sonnet-5-5" say the text of a reply that also
calls tools as a signed thinking block, as Claude Sonnet 5.5 does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anthropic.types.message_create_params import MessageCreateParamsStreaming

from tests.fakes import faults
from tests.fakes.faults import FakeUpstream

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


class FakeAnthropic(FakeUpstream):
    # The keyword arguments of `_send_stream`, and their value when nothing is scripted.
    STREAM_FAULTS = {"seconds_per_event": 0.0, "break_after": None, "malformed_after": None, "error_event": None,
                     "gate": None}
    FAILURE_STATUS = 529  # overloaded

    def __init__(self, api_key: str = FAKE_API_KEY, default_reply: str | None = None) -> None:
        super().__init__(api_key, default_reply)
        self.app = Starlette(routes=[Route("/v1/messages", faults.AsgiEndpoint(self._messages), methods=["POST"])])

    # --- scripting (replies, failures, delays, slow and broken streams: see `FakeUpstream`) -
    def malformed_sse(self, after_events: int = 0, times: int = 1) -> None:
        """The next `times` streams send a non-JSON `data:` line after `after_events` events."""
        self._push("malformed_after", [after_events] * times)

    def error_event_after(self, n_events: int, error_type: str = "overloaded_error", times: int = 1) -> None:
        """The next `times` streams send an SSE `error` event after `n_events` events, then end
        (as upstream does when it gives up mid-answer)."""
        self._push("error_event", [(n_events, error_type)] * times)

    # --- serving ---------------------------------------------------------------------------
    async def _messages(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        # Everything this request will do is decided at once, on arrival: a handler still
        # sleeping after its client gave up must not consume faults scripted for later requests.
        with self._lock:
            body, headers, number = self._record(request, raw)
            delay = self._take("header_delay", 0.0)
            refusal = self._refusal(headers, body, number)
            if refusal is None:
                reply, snapshot = self._take_reply(streaming=bool(body.get("stream")), body=body)
        if delay:
            await asyncio.sleep(delay)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        message = _build_message(body, reply, self.default_reply, number)
        request_id = f"req_fake_{number:06d}"
        if not body.get("stream"):
            await faults.json_answer(message, {"request-id": request_id}, snapshot)(scope, receive, send)
            return
        await _send_stream(send, message, request_id, **snapshot)

    def _refusal(self, headers: dict[str, str], body: Any, number: int) -> Response | None:
        """An error answer (auth, injected failure, invalid body), or None. Holds the lock."""
        if (
            headers.get("x-api-key") != self.api_key
            and headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(401, "invalid x-api-key", number)
        failure = self._take("failure")
        if failure is not None:
            return _error(failure.status, failure.message, number, failure.headers())
        if not isinstance(body, dict):
            return _error(400, "There was an error parsing the body of your request", number)
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error(400, f"{name}: Field required", number)
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return _error(400, "max_tokens: Input should be greater than or equal to 1", number)
        problem = request_problem(body)
        return None if problem is None else _error(400, problem, number)


# The body fields the real API knows: those the official SDK sends in the body, and the sampling
# fields older models still take (the current SDK no longer sends them).
KNOWN_FIELDS = frozenset(
    (MessageCreateParamsStreaming.__required_keys__ | MessageCreateParamsStreaming.__optional_keys__)
    - {"workspace_id", "user_profile_id"}  # the SDK sends these two as headers
) | {"temperature", "top_p", "top_k"}


def request_problem(body: dict[str, Any]) -> str | None:
    """The 400 message the real API would give for rules a translator can break, or None."""
    problem = history_problem(body["messages"])
    if problem is not None:
        return problem
    for name in body:
        if name not in KNOWN_FIELDS:
            return f"{name}: Extra inputs are not permitted"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    if body.get("tool_choice") is not None and not body.get("tools"):
        return "tool_choice may only be specified while providing tools"
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled" and not 1024 <= thinking.get("budget_tokens", 0) < body["max_tokens"]:
        return "thinking.budget_tokens: must be at least 1024 and less than max_tokens"
    fmt = (body.get("output_config") or {}).get("format")
    if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
        return "output_config.format: Input should be a valid json_schema format"
    return None


def tool_calling_responder(body: dict[str, Any]) -> FakeReply | None:
    """A model that calls a tool it is offered (the one `tool_choice` names, else the first) with
    an input made from its schema, unless the conversation just answered a tool call."""
    tools = [t for t in body.get("tools") or [] if t.get("input_schema") is not None]
    last = (body.get("messages") or [{}])[-1].get("content")
    answered = isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
    if not tools or answered:
        return None
    named = (body.get("tool_choice") or {}).get("name")
    tool = next((t for t in tools if t["name"] == named), tools[0])
    return FakeReply(tool_uses=[FakeToolUse(tool["name"], faults.example_of(tool["input_schema"]))])


def history_problem(messages: Any) -> str | None:
    """The history rules of the real Messages API a gateway can break: every tool_use answered
    by a tool_result in the very next message, no result without its tool_use, and thinking
    blocks sent back with their signature."""
    pending: set[str] = set()
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        blocks = m.get("content") if isinstance(m, dict) and isinstance(m.get("content"), list) else []
        results = {b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"}
        if pending and results != pending:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{sorted(pending - results)}")
        if results - pending:
            return f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks"
        pending = {b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"}
        for b in blocks:
            if isinstance(b, dict) and b.get("type") == "thinking" and not b.get("signature"):
                return f"messages.{i}.content: thinking blocks must carry their `signature`"
    return None


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
    return faults.tokens_for(body, ("messages", "system", "tools"))


def _build_message(
    body: dict[str, Any], reply: FakeReply | None, default_reply: str | None, number: int
) -> dict[str, Any]:
    digest = faults.reply_digest(body, number)
    fmt = (body.get("output_config") or {}).get("format")
    if reply is None and fmt is not None:  # structured output: JSON that fits the schema
        reply = FakeReply(text=json.dumps(faults.example_of(fmt["schema"])))
    if reply is None:
        words = faults.default_words(body, default_reply)
        cut = len(words) > body["max_tokens"]
        reply = FakeReply(
            text=" ".join(words[: body["max_tokens"]]), stop_reason="max_tokens" if cut else "end_turn"
        )
    content: list[dict[str, Any]] = []
    # Claude Sonnet 5.5 says the text between tool calls as (signed) thinking.
    between_tools = "sonnet-5-5" in str(body.get("model")) and reply.tool_uses and reply.text is not None
    if reply.thinking is not None or between_tools:
        thinking = reply.thinking if reply.thinking is not None else reply.text
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig_" + digest[:32]})
    if reply.text is not None and not between_tools:
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
            for piece in faults.pieces(block["text"]):
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
            for piece in faults.pieces(block["thinking"]):
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


async def _send_stream(
    send: Any,
    message: dict[str, Any],
    request_id: str,
    *,
    error_event: tuple[int, str] | None,
    **stream_faults: Any,
) -> None:
    error_after, error_type = error_event or (None, "")
    error = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    await faults.send_event_stream(
        send,
        [_frame(event) for event in stream_events(message)],
        headers={"request-id": request_id},
        malformed_frame=b"event: content_block_delta\ndata: {not json\n\n",
        error_after=error_after,
        error_frame=_frame(error),
        **stream_faults,
    )


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def running_fake_anthropic(**kwargs: Any) -> AbstractContextManager[FakeAnthropic]:
    """A `FakeAnthropic(**kwargs)` served on 127.0.0.1; `fake.base_url` is set inside the block."""
    return faults.serving(FakeAnthropic(**kwargs))
