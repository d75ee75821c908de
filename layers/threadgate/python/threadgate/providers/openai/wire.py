"""OpenAI Chat Completions wire vocabulary, and the small value mappings (stop reasons, usage,
tool arguments, ids) that both the whole-message and the streaming translators share.

Shapes themselves stay plain dicts: the translators build and read them directly, and the tests
check them with the official SDKs.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

CHAT_COMPLETIONS_PATH = "/chat/completions"
CHUNK_OBJECT = "chat.completion.chunk"
COMPLETION_OBJECT = "chat.completion"
SSE_DONE = "[DONE]"


def request_headers(api_key: str) -> dict[str, str]:
    """Headers of every Chat Completions call. The key travels only here, never in a log or an error."""
    return {
        "authorization": f"Bearer {api_key}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
    }

# A tool_result flagged `is_error` has no equivalent field in a `role: "tool"` message, so the
# flag travels as this prefix on its text; the reverse translation strips it and restores the flag.
TOOL_ERROR_PREFIX = "[tool error] "

# Tool-call arguments that are not a JSON object cannot become an Anthropic `tool_use.input`
# (which must be an object). Rather than silently sending `{}` to a webhook, the raw text is kept
# under this key, and translating back to OpenAI restores it verbatim as `arguments`.
RAW_ARGUMENTS_KEY = "_raw_arguments"

# OpenAI finish_reason -> Anthropic stop_reason.
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",  # also when a stop sequence matched: OpenAI does not say which one
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic stop_reason -> OpenAI finish_reason.
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

OPENAI_MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
ANTHROPIC_MESSAGE_ROLES = ("user", "assistant")


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call `arguments` text -> an Anthropic `tool_use.input` object. Empty means no
    arguments; anything that is not a JSON object is kept verbatim under RAW_ARGUMENTS_KEY."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, dict):  # some OpenAI-compatible servers send an object, not a string
        return raw
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {RAW_ARGUMENTS_KEY: str(raw)}
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: raw}


def arguments_to_json(tool_input: Any) -> str:
    """An Anthropic `tool_use.input` -> OpenAI `arguments` text (inverse of parse_arguments)."""
    if isinstance(tool_input, dict) and set(tool_input) == {RAW_ARGUMENTS_KEY}:
        raw = tool_input[RAW_ARGUMENTS_KEY]
        if isinstance(raw, str):
            return raw
    return json.dumps(tool_input if tool_input is not None else {}, ensure_ascii=False)


def stop_reason_from_finish(finish_reason: str | None, *, called_tools: bool) -> str:
    """OpenAI finish_reason -> Anthropic stop_reason (content_filter becomes `refusal`)."""
    if called_tools and finish_reason in (None, "stop", "tool_calls", "function_call"):
        return "tool_use"  # some compatible servers report "stop" after tool calls
    return FINISH_TO_STOP.get(finish_reason or "stop", "end_turn")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_to_anthropic(usage: Any, service_tier: Any = None) -> dict[str, Any]:
    """OpenAI counts cached prompt tokens inside `prompt_tokens`; Anthropic counts them apart.
    The service tier OpenAI reports it used (top level of its answer) prices the call: it goes
    where Anthropic puts its own, `usage.service_tier`."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = _count(usage.get("prompt_tokens"))
    out: dict[str, Any] = {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": min(cached, prompt),
    }
    if isinstance(service_tier, str):
        out["service_tier"] = service_tier
    return out


def usage_to_openai(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + _count(usage.get("cache_creation_input_tokens")) + cache_read
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def message_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        return openai_id if openai_id.startswith("msg_") else f"msg_{openai_id}"
    return f"msg_{uuid.uuid4().hex}"


def completion_id(anthropic_id: Any) -> str:
    if isinstance(anthropic_id, str) and anthropic_id:
        return anthropic_id if anthropic_id.startswith("chatcmpl-") else f"chatcmpl-{anthropic_id}"
    return f"chatcmpl-{uuid.uuid4().hex}"
