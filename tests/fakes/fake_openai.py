"""A scriptable fake of the OpenAI Chat Completions API (`POST /v1/chat/completions`), served
over real HTTP; it also serves the Responses API (`POST /v1/responses`, in
tests/fakes/fake_openai_responses.py) with the same scripting.

It answers in the real wire format — `chat.completion` JSON, and SSE streams of
`data: {chat.completion.chunk}\\n\\n` lines ending with `data: [DONE]`, plus the usage chunk
(empty `choices`) when `stream_options.include_usage` is set — which
`tests/integration/test_openai_provider.py` checks with the official `openai` SDK. It also
enforces the request rules of the real API that a translator can break (only the fields the
official SDK can send, tool messages must answer a preceding assistant `tool_calls`, every call
must be answered, `stream_options` only with `stream`, `tool_choice` only with `tools`, strict
schemas closed and fully required), answering 400 like the real API does. A `response_format`
json_schema is answered with JSON that fits it; `n` choices and `logprobs` are served as asked.

    with running_fake_openai() as fake:
        fake.enqueue(FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
                     FakeReply(text="It is sunny."))
        fake.fail_next(status=503, times=2)        # faults are consumed one request at a time
        ... point a client at fake.v1_url with api key fake.api_key ...
        fake.requests[-1].body["messages"]        # what was sent

Replies: scripted `FakeReply`s are served in order to requests that get past the injected
failures; when none is queued, `fake.responder(body)` decides if set (e.g.
`tool_calling_responder`), else the reply is `default_reply` (or "Fake reply to: <last user
text>"), cut to `max_completion_tokens` (or `max_tokens`) words with finish_reason "length".
Default usage: prompt_tokens = ceil(bytes of JSON {messages, tools} / 4), completion_tokens =
words + tool calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

from tests.fakes import faults
from tests.fakes import fake_openai_responses as responses
from tests.fakes.faults import FakeUpstream

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
    service_tier: str | None = None  # what the answer reports; default: as the real API does
    reasoning_tokens: int = 0  # Responses only: reasoning tokens, counted in the output tokens
    failed: bool = False  # Responses only: the response ends `failed` (a server_error), with its usage


def served_tier(body: dict[str, Any]) -> str:
    """The real API reports the tier it used: the one asked for ("priority", "flex"), else the
    project default ("auto" → "default")."""
    asked = body.get("service_tier")
    return asked if asked in ("priority", "flex", "scale") else "default"


class FakeOpenAI(FakeUpstream):
    # The keyword arguments of `_send_stream`, and their value when nothing is scripted.
    FAILURE_STATUS = 503
    STREAM_FAULTS = {
        "seconds_per_event": 0.0,
        "break_after": None,
        "error_after": None,
        "malformed_after": None,
        "gate": None,
        "omit_done": False,
    }

    def __init__(self, api_key: str = FAKE_API_KEY, default_reply: str | None = None) -> None:
        super().__init__(api_key, default_reply)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", faults.AsgiEndpoint(self._chat_completions), methods=["POST"]),
            Route("/v1/responses", faults.AsgiEndpoint(self._responses), methods=["POST"]),
        ])

    @property
    def v1_url(self) -> str:
        """What OpenAI clients call `base_url` (OPENAI_BASE_URL): the root including /v1."""
        return self.base_url + "/v1"

    # --- scripting (replies, failures, delays, slow and broken streams: see `FakeUpstream`) -
    def error_in_stream_after(self, n_chunks: int, times: int = 1) -> None:
        """The next `times` streams send `n_chunks` chunks, then an `{"error": …}` payload."""
        self._push("error_after", [n_chunks] * times)

    def malformed_sse(self, after_chunks: int = 0, times: int = 1) -> None:
        """The next `times` streams send a non-JSON `data:` line after `after_chunks` chunks."""
        self._push("malformed_after", [after_chunks] * times)

    def omit_done(self, times: int = 1) -> None:
        """The next `times` streams end cleanly after the finish chunk, without usage or [DONE]."""
        self._push("omit_done", [True] * times)

    # --- serving ---------------------------------------------------------------------------
    async def _accepted(self, scope: Any, receive: Any, send: Any, problem_of: Any) -> tuple[Request, Any, int] | None:
        """The request, its body and number once it passed the scripted delay, the key and the
        API's rules (`problem_of`); None when it was answered with an error (or its client left)."""
        request = Request(scope, receive)
        raw = await request.body()
        with self._lock:
            body, headers, number = self._record(request, raw)
            delay = self._take("header_delay", 0.0)
        if delay and await faults.client_left_during(request, delay):
            return None  # a client that gave up must not consume the faults queued for the next one
        response = self._refusal(headers, body, number, problem_of)
        if response is not None:
            await response(scope, receive, send)
            return None
        return request, body, number

    async def _chat_completions(self, scope: Any, receive: Any, send: Any) -> None:
        accepted = await self._accepted(scope, receive, send, request_problem)
        if accepted is None:
            return
        request, body, number = accepted
        with self._lock:
            reply, snapshot = self._take_reply(streaming=bool(body.get("stream")), body=body)
        completion = build_completion(body, reply, self.default_reply, number)
        if not body.get("stream"):
            await faults.json_answer(completion, _request_id(number), snapshot)(scope, receive, send)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await _send_stream(request, send, stream_chunks(completion, include_usage), number, **snapshot)

    async def _responses(self, scope: Any, receive: Any, send: Any) -> None:
        """The Responses API (tests/fakes/fake_openai_responses.py), scripted as Chat Completions."""
        accepted = await self._accepted(scope, receive, send, responses.request_problem)
        if accepted is None:
            return
        request, body, number = accepted
        with self._lock:
            reply, snapshot = self._take_reply(streaming=bool(body.get("stream")), body=body)
        answer = responses.build_response(body, reply, self.default_reply, number, served_tier(body))
        if not body.get("stream"):
            await faults.json_answer(answer, _request_id(number), snapshot)(scope, receive, send)
            return
        snapshot.pop("omit_done", None)  # a Responses stream has no [DONE]; its end is response.completed
        await faults.send_event_stream(
            send,
            [responses.frame(event) for event in responses.stream_events(answer)],
            headers=_request_id(number),
            malformed_frame=b"event: response.output_text.delta\ndata: {not json\n\n",
            error_frame=responses.error_frame(),
            pause=lambda seconds: faults.client_left_during(request, seconds),
            **snapshot,
        )

    def _refusal(self, headers: dict[str, str], body: Any, number: int, problem_of: Any) -> Response | None:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            # The real message names the key (masked); the gateway must never repeat it.
            shown = headers.get("authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {shown}.", number, code="invalid_api_key")
        with self._lock:
            failure = self._take("failure")
        if failure is not None:
            return _error(failure.status, failure.message, number, code=failure.code, headers=failure.headers())
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", number)
        problem = problem_of(body)
        return None if problem is None else _error(400, problem, number)


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
# The request fields the real API knows: those the official SDK can send.
KNOWN_FIELDS = frozenset(CompletionCreateParamsStreaming.__required_keys__ | CompletionCreateParamsStreaming.__optional_keys__)


def request_problem(body: dict[str, Any]) -> str | None:
    """The 400 message the real API would give, or None when the request is acceptable."""
    for name in ("model", "messages"):
        if name not in body:
            return f"Missing required parameter: '{name}'."
    for name in body:
        if name not in KNOWN_FIELDS:
            return f"Unrecognized request argument supplied: {name}"
    problem = _format_problem(body.get("response_format")) or _tools_problem(body.get("tools"))
    if problem:
        return problem
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


def _format_problem(response_format: Any) -> str | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return "Invalid value for 'response_format.type'."
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return "Missing required parameter: 'response_format.json_schema.name'."
    if not isinstance(spec.get("schema"), dict):
        return "Invalid type for 'response_format.json_schema.schema': expected an object."
    return faults.strict_schema_problem(spec["schema"], "response_format") if spec.get("strict") else None


def _tools_problem(tools: Any) -> str | None:
    for i, tool in enumerate(tools or []):
        if tool.get("type") == "custom":
            continue
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f"Missing required parameter: 'tools[{i}].function'."
        if function.get("strict"):
            problem = faults.strict_schema_problem(function.get("parameters") or {}, f"function '{function['name']}'")
            if problem:
                return problem
    return None


# --- building answers ----------------------------------------------------------------------
def prompt_tokens_for(body: dict[str, Any]) -> int:
    return faults.tokens_for(body, ("messages", "tools"))


def build_completion(
    body: dict[str, Any], reply: FakeReply | None, default_reply: str | None, number: int
) -> dict[str, Any]:
    digest = faults.reply_digest(body, number)
    structured = _structured_reply(body.get("response_format"))
    if reply is None and structured is not None:
        reply = FakeReply(text=structured)
    if reply is None:
        words = faults.default_words(body, default_reply)
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
    n = body.get("n") or 1
    completion_tokens *= n  # every choice is billed
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens_for(body)
    return {
        "id": f"chatcmpl-{digest[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(reply.text) if body.get("logprobs") else None,
                "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
            }
            for index in range(n)
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
        "service_tier": reply.service_tier or served_tier(body),
        "system_fingerprint": "fp_fake0001",
    }


def tool_calling_responder(body: dict[str, Any]) -> FakeReply | None:
    """A model that calls a tool it is offered (the one `tool_choice` names, else the first) with
    an input made from its schema, unless the conversation just answered a tool call."""
    tools = [t.get("function") or t for t in body.get("tools") or body.get("functions") or []]
    tools = [t for t in tools if t.get("type", "function") == "function"]
    messages = body.get("messages") or [{}]
    if not tools or messages[-1].get("role") in ("tool", "function") or responses.answered_a_tool_call(body):
        return None
    choice = body.get("tool_choice")
    # Chat Completions names the function under `function`; Responses at the top level.
    named = (choice.get("function") or choice).get("name") if isinstance(choice, dict) else None
    tool = next((t for t in tools if t.get("name") == named), tools[0])
    return FakeReply(tool_calls=[FakeToolCall(tool["name"], faults.example_of(tool.get("parameters") or {}))])


def _structured_reply(response_format: Any) -> str | None:
    """The answer to a request for structured output: JSON that fits the schema."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return json.dumps(faults.example_of(response_format["json_schema"]["schema"]))
    return json.dumps({"answer": "example"}) if response_format.get("type") == "json_object" else None


def _logprobs(text: str | None) -> dict[str, Any]:
    tokens = (text or "").split()
    return {"content": [{"token": t, "logprob": -0.5, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens],
            "refusal": None}


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunk sequence that streams `completion`, shaped as the real API sends it."""
    envelope = {key: completion[key] for key in ("id", "created", "model", "service_tier", "system_fingerprint")}
    envelope["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        out = {**envelope, "choices": [choice]}
        if include_usage:
            out["usage"] = None
        return out

    chunks = []
    for index, choice in enumerate(completion["choices"]):  # n > 1: one choice after the other
        message = choice["message"]
        calls = message.get("tool_calls") or []
        first_content = "" if message["content"] is not None or not calls else None
        chunks.append(chunk({"role": "assistant", "content": first_content, "refusal": None}))
        logprobs = (choice.get("logprobs") or {}).get("content") or []
        for position, piece in enumerate(faults.pieces(message["content"] or "")):
            token = logprobs[position : position + 1] if choice.get("logprobs") else None
            chunks.append(chunk({"content": piece}, logprobs={"content": token, "refusal": None} if token else None))
        for piece in faults.pieces(message.get("refusal") or ""):
            chunks.append(chunk({"refusal": piece}))
        for call_index, call in enumerate(calls):
            function = {"name": call["function"]["name"], "arguments": ""}
            head = {"index": call_index, "id": call["id"], "type": "function", "function": function}
            chunks.append(chunk({"tool_calls": [head]}))
            raw = call["function"]["arguments"]
            for start in range(0, len(raw), 8):
                piece = {"index": call_index, "function": {"arguments": raw[start : start + 8]}}
                chunks.append(chunk({"tool_calls": [piece]}))
        chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**envelope, "choices": [], "usage": completion["usage"]})
    return chunks


async def _send_stream(
    request: Request,
    send: Any,
    chunks: list[dict[str, Any]],
    number: int,
    *,
    omit_done: bool,
    **stream_faults: Any,
) -> None:
    if omit_done:  # a clean end after the finish chunk: no usage chunk, no [DONE]
        chunks = [c for c in chunks if c["choices"]]
    message = "The server had an error while processing your request."
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    await faults.send_event_stream(
        send,
        [_frame(json.dumps(chunk)) for chunk in chunks],
        headers=_request_id(number),
        malformed_frame=_frame("{not json"),
        error_frame=_frame(json.dumps(error)),
        trailer=b"" if omit_done else _frame("[DONE]"),
        pause=lambda seconds: faults.client_left_during(request, seconds),
        **stream_faults,
    )


def _frame(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def running_fake_openai(**kwargs: Any) -> AbstractContextManager[FakeOpenAI]:
    """A `FakeOpenAI(**kwargs)` served on 127.0.0.1; `fake.base_url` is set inside the block."""
    return faults.serving(FakeOpenAI(**kwargs))
