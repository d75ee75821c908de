"""Build the final Anthropic message from its stream events (pure; no I/O).

Used to assemble a streamed answer for persistence and billing, and to account for a stream
that broke midway: `message()` works on a partial stream and returns what was received.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from threadgate.providers.anthropic.wire import Message, empty_message


class MessageAccumulator:
    """Feed events in order with `feed()`; read the result with `message()` and `usage`."""

    def __init__(self) -> None:
        self._message: Message = empty_message()
        self._blocks: dict[int, dict[str, Any]] = {}
        # Tool input arrives as JSON fragments; it is parsed once the block is complete.
        self._json_parts: dict[int, list[str]] = {}
        self._usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0}
        self.started = False
        self.finished = False
        self.deltas = 0  # content deltas seen (a broken stream is billed at least one token each)

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._start(event.get("message") or {})
        elif kind == "content_block_start":
            index = event["index"]
            block = copy.deepcopy(event.get("content_block") or {})
            self._blocks[index] = block
            if block.get("type") in ("tool_use", "server_tool_use"):
                self._json_parts[index] = []
        elif kind == "content_block_delta":
            self.deltas += 1
            self._apply_delta(event["index"], event.get("delta") or {})
        elif kind == "content_block_stop":
            self._finish_tool_input(event["index"])
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            for field in ("stop_reason", "stop_sequence"):
                if field in delta:
                    self._message[field] = delta[field]  # type: ignore[literal-required]
            self._merge_usage(event.get("usage") or {})
        elif kind == "message_stop":
            self.finished = True
        # `ping`, `error` and unknown future events carry no content.

    @property
    def usage(self) -> dict[str, Any]:
        """Usage as reported so far: message_start's numbers updated by message_delta's
        (Anthropic's message_delta counters are cumulative, so later values replace earlier)."""
        return dict(self._usage)

    @property
    def stop_reason(self) -> str | None:
        return self._message.get("stop_reason")

    def message(self) -> Message:
        """The message as received so far; unfinished blocks are included as they stand."""
        message = copy.deepcopy(self._message)
        content = []
        for index in sorted(self._blocks):
            block = copy.deepcopy(self._blocks[index])
            if index in self._json_parts:
                block["input"] = _parse_tool_input(self._json_parts[index], block.get("input"))
            content.append(block)
        message["content"] = content
        message["usage"] = self.usage  # type: ignore[typeddict-item]
        return message

    def _start(self, started: dict[str, Any]) -> None:
        self.started = True
        self._message = empty_message()
        self._message.update({k: copy.deepcopy(v) for k, v in started.items() if k != "content"})  # type: ignore[typeddict-item]
        self._usage = {"input_tokens": 0, "output_tokens": 0}
        self._merge_usage(started.get("usage") or {})

    def _merge_usage(self, usage: dict[str, Any]) -> None:
        for key, value in usage.items():
            if value is not None:
                self._usage[key] = copy.deepcopy(value)

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self._json_parts.setdefault(index, []).append(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _finish_tool_input(self, index: int) -> None:
        parts = self._json_parts.pop(index, None)
        if parts is not None and index in self._blocks:
            block = self._blocks[index]
            block["input"] = _parse_tool_input(parts, block.get("input"))


def _parse_tool_input(parts: list[str], started_with: Any) -> Any:
    raw = "".join(parts)
    if not raw.strip():
        # No fragments: the start event's input ({} for Anthropic) is the whole input.
        return started_with if started_with is not None else {}
    try:
        return json.loads(raw)
    except ValueError:
        # An unfinished (broken) stream: the fragments are not yet a JSON document.
        return {}


def accumulate(events: Iterable[dict[str, Any]]) -> Message:
    """The final message of a complete (or partial) sequence of stream events."""
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.feed(event)
    return accumulator.message()
