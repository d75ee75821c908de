"""Anthropic Messages wire protocol: constants and the (documentation-only) shapes we exchange.

The gateway's canonical request/answer form IS this wire form, so these shapes are used as plain
dicts everywhere; the TypedDicts only name the fields we rely on.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"

STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"})
STREAM_EVENT_TYPES = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
# Usage counters that are token counts (summed when several calls make one turn).
USAGE_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class Usage(TypedDict, total=False):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None
    cache_read_input_tokens: int | None


class Message(TypedDict, total=False):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


def request_headers(api_key: str) -> dict[str, str]:
    """Headers of every Messages call. The key travels only here, never in a log or an error."""
    return {
        "x-api-key": api_key,
        "anthropic-version": API_VERSION,
        "content-type": "application/json",
        "accept": "application/json",
    }


def empty_message(model: str = "", message_id: str = "") -> Message:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
