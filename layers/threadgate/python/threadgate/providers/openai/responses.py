"""The OpenAI Responses API wire (`POST /responses`), for same-family passthrough only: its
vocabulary, how a streamed answer is read as it passes (`ResponsesTally`) and how its usage
becomes the gateway's.

A streamed Responses answer is typed SSE events (`response.created`, `response.output_text.delta`,
… `response.completed`), each with a `sequence_number` and no `[DONE]`: the answer is whole at its
terminal event, which carries the whole `response` with its usage.
"""

from __future__ import annotations

from typing import Any

from threadgate.domain.models import Usage
from threadgate.providers.openai.wire import usage_to_anthropic

RESPONSES_PATH = "/responses"
RESPONSE_OBJECT = "response"
MIN_OUTPUT_TOKENS = 16  # the smallest `max_output_tokens` the API takes
# The events that end a streamed answer; each carries the whole `response` with its usage.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Deltas of generated content: a broken stream bills at least one output token per delta seen.
_DELTA_SUFFIX = ".delta"


def usage_of(answer: dict[str, Any]) -> Usage:
    """A `response`'s usage. Like Chat Completions, OpenAI counts cached tokens inside
    `input_tokens` and reasoning tokens inside `output_tokens`; the tier it reports it served
    prices the call (domain/billing.py)."""
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    as_chat = {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "prompt_tokens_details": usage.get("input_tokens_details"),
    }
    return Usage.from_anthropic(usage_to_anthropic(as_chat, answer.get("service_tier")))


def failed(answer: dict[str, Any]) -> bool:
    """A `response` that ended `failed` (its `error` says why): the API gave up mid-answer."""
    return answer.get("status") == "failed"


class ResponsesTally:
    """Reads a streamed Responses answer as its events pass (`domain.passthrough.Tally`)."""

    def __init__(self) -> None:
        self.started = False
        self.deltas = 0
        self._response: dict[str, Any] = {}  # the latest snapshot of the whole `response`

    def feed(self, event: dict[str, Any]) -> None:
        self.started = True
        kind = event.get("type")
        if isinstance(event.get("response"), dict):
            self._response = event["response"]
        elif isinstance(kind, str) and kind.endswith(_DELTA_SUFFIX):
            self.deltas += 1

    def message(self) -> dict[str, Any]:
        return self._response
