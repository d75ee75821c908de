"""The OpenAI Responses API (`POST /v1/responses`) of the fake OpenAI (`fake_openai.FakeOpenAI`
serves it next to Chat Completions, with the same scripting: `FakeReply`s, `responder`, failures,
slow and broken streams).

It answers in the real wire format — a `response` object, or an SSE stream of typed events
(`event: response.created` … `event: response.completed`, each with its `sequence_number`; no
[DONE]) — which `tests/integration/test_openai_responses.py` checks with the official `openai`
SDK (`client.responses.create`, `client.responses.stream`). It enforces the request rules a
gateway can break: only the fields the official SDK can send, `function_call_output` items must
answer a `function_call` earlier in `input`, strict schemas closed and fully required,
`max_output_tokens` at least 16, `stream_options` only with `stream`.

Usage: input_tokens = ceil(bytes of JSON {input, instructions, tools} / 4) (cached ones included,
as OpenAI counts them), output_tokens = words + tool calls + the reply's `reasoning_tokens`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from tests.fakes import faults

KNOWN_FIELDS = frozenset(ResponseCreateParamsStreaming.__required_keys__ | ResponseCreateParamsStreaming.__optional_keys__)
MIN_OUTPUT_TOKENS = 16  # the real API refuses a smaller max_output_tokens


def request_problem(body: dict[str, Any]) -> str | None:
    """The 400 message the real API would give, or None when the request is acceptable."""
    if "model" not in body:
        return "Missing required parameter: 'model'."
    for name in body:
        if name not in KNOWN_FIELDS:
            return f"Unknown parameter: '{name}'."
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < MIN_OUTPUT_TOKENS):
        return f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}."
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            return "Missing required parameter: 'text.format.name'."
        if fmt.get("strict"):
            problem = faults.strict_schema_problem(fmt["schema"], "text.format")
            if problem:
                return problem
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return f"Missing required parameter: 'tools[{i}].type'."
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                return f"Missing required parameter: 'tools[{i}].name'."
            if tool.get("strict"):
                problem = faults.strict_schema_problem(tool.get("parameters") or {}, f"function '{tool['name']}'")
                if problem:
                    return problem
    calls: set[str] = set()
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else []):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "function_call":
            calls.add(item.get("call_id"))
        elif kind == "function_call_output" and item.get("call_id") not in calls and not body.get("previous_response_id"):
            return f"No tool call found for function call output with call_id {item.get('call_id')}."
        elif kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            return f"Invalid value for 'input[{i}].role'."
    return None


def answered_a_tool_call(body: dict[str, Any]) -> bool:
    items = body.get("input")
    return isinstance(items, list) and bool(items) and isinstance(items[-1], dict) and (
        items[-1].get("type") == "function_call_output")


def structured_reply(body: dict[str, Any]) -> str | None:
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        return json.dumps(faults.example_of(fmt.get("schema") or {}))
    return json.dumps({"answer": "example"}) if fmt.get("type") == "json_object" else None


def build_response(body: dict[str, Any], reply: Any, default_reply: str | None, number: int, served_tier: str) -> dict[str, Any]:
    """The whole `response` object (status completed, incomplete when cut at max_output_tokens, or
    failed when the reply says so: the error the API reports when it gives up mid-answer)."""
    from tests.fakes.fake_openai import FakeReply  # one reply type for both APIs

    digest = faults.reply_digest(body, number)
    structured = structured_reply(body)
    if reply is None and structured is not None:
        reply = FakeReply(text=structured)
    if reply is None:
        words = (default_reply or f"Fake reply to: {faults.last_user_text(body, 'input', 'input_text')}").split()
        limit = body.get("max_output_tokens") or len(words)
        reply = FakeReply(text=" ".join(words[:limit]), finish_reason="length" if len(words) > limit else "stop")
    output: list[dict[str, Any]] = []
    if reply.text is not None or reply.refusal is not None:
        part = ({"type": "refusal", "refusal": reply.refusal} if reply.refusal is not None else
                {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []})
        output.append({"type": "message", "id": f"msg_{digest[:24]}", "status": "completed", "role": "assistant",
                       "content": [part]})
    for position, call in enumerate(reply.tool_calls):
        output.append({
            "type": "function_call", "id": f"fc_{digest[position * 2: position * 2 + 24]}",
            "call_id": call.id or f"call_{digest[position * 2 + 1: position * 2 + 25]}", "name": call.name,
            "arguments": call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments),
            "status": "completed",
        })
    output_tokens = reply.completion_tokens
    if output_tokens is None:
        output_tokens = max(1, len((reply.text or "").split()) + len(reply.tool_calls)) + reply.reasoning_tokens
    input_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else faults.tokens_for(
        body, ("input", "instructions", "tools"))
    cut = reply.finish_reason == "length"
    return {
        "id": f"resp_{digest[:32]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "failed" if reply.failed else "incomplete" if cut else "completed",
        "background": False,
        "error": {"code": "server_error", "message": "The model failed to generate a response."} if reply.failed else None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": reply.service_tier or served_tier,
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "metadata": body.get("metadata") or {},
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def stream_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The event sequence that streams `response`, shaped as the real API sends it."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    opening = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            if part["type"] == "refusal":
                empty: dict[str, Any] = {"type": "refusal", "refusal": ""}
                emit("response.content_part.added", **where, content_index=0, part=empty)
                for piece in faults.pieces(part["refusal"]):
                    emit("response.refusal.delta", **where, content_index=0, delta=piece)
                emit("response.refusal.done", **where, content_index=0, refusal=part["refusal"])
            else:
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                emit("response.content_part.added", **where, content_index=0, part=empty)
                for piece in faults.pieces(part["text"]):
                    emit("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
                emit("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
            emit("response.content_part.done", **where, content_index=0, part=part)
        else:  # function_call
            emit("response.output_item.added", output_index=index,
                 item={**item, "arguments": "", "status": "in_progress"})
            raw = item["arguments"]
            for start in range(0, len(raw), 8):
                emit("response.function_call_arguments.delta", **where, delta=raw[start: start + 8])
            emit("response.function_call_arguments.done", **where, name=item["name"], arguments=raw)
        emit("response.output_item.done", output_index=index, item=item)
    emit(f"response.{response['status']}", response=response)  # completed, incomplete or failed
    return events


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def error_frame() -> bytes:
    return frame({"type": "error", "code": "server_error", "sequence_number": 0, "param": None,
                  "message": "The server had an error while processing your request."})
