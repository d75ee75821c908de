"""Turning a thread's stored messages into upstream history that is always valid (invariant 3).

- Orphan `tool_use` blocks (a crash between a model call and its tool results) get a synthetic
  error `tool_result`, and stray `tool_result`s without their `tool_use` are dropped.
- A thinking block without its signature (a stream that broke before the signature arrived) is
  dropped: no upstream accepts unsigned thinking back, and models that say their between-tools
  text as thinking (Claude Sonnet 5.5) make such blocks common.
- Consecutive messages of the same role are merged (a user turn whose model call failed leaves
  two user messages in a row).
- Fitting drops whole exchanges, oldest first. An exchange starts at a plain user message, so a
  `tool_use` is never separated from its `tool_result`. Size is bounded in bytes of JSON: a token
  is at least one byte, so the byte count never underestimates the tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from threadgate import jsoncodec

from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import Message

INTERRUPTED = "not executed: the turn was interrupted"


def as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def _tool_use_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["id"] for b in blocks if b.get("type") == "tool_use"]


def _unsigned_thinking(block: dict[str, Any]) -> bool:
    return block.get("type") == "thinking" and not block.get("signature")


def _repair(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair every tool_use with a tool_result in the next user message; drop unpaired results."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids of the previous assistant message awaiting results
    for m in messages:
        blocks = [b for b in as_blocks(m["content"]) if not _unsigned_thinking(b)]
        if m["role"] == "user":
            kept, answered = [], set()
            for b in blocks:  # one result per pending tool_use; strays and repeats go
                if b.get("type") == "tool_result":
                    if b.get("tool_use_id") not in pending or b.get("tool_use_id") in answered:
                        continue
                    answered.add(b.get("tool_use_id"))
                kept.append(b)
            missing = [i for i in pending if i not in answered]
            # Upstream wants the results first in the message, any text after them.
            results = [b for b in kept if b.get("type") == "tool_result"]
            blocks = [_interrupted(i) for i in missing] + results + [b for b in kept if b.get("type") != "tool_result"]
            pending = []
        else:
            if pending:  # an assistant message follows unanswered tool_use: answer them first
                out.append({"role": "user", "content": [_interrupted(i) for i in pending]})
            pending = _tool_use_ids(blocks)
        if blocks:
            out.append({"role": m["role"], "content": blocks})
    if pending:
        out.append({"role": "user", "content": [_interrupted(i) for i in pending]})
    return out


def _interrupted(tool_use_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "is_error": True, "content": INTERRUPTED}


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"]:
            prev = merged[-1]["content"]
            # tool_results must come first in a user message; keep them ahead of text.
            combined = prev + m["content"]
            if m["role"] == "user":
                combined = [b for b in combined if b.get("type") == "tool_result"] + [
                    b for b in combined if b.get("type") != "tool_result"
                ]
            merged[-1] = {"role": m["role"], "content": combined}
        else:
            merged.append(m)
    return merged


def _start_with_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upstream needs a user message first, and it cannot hold tool_results: the tool_use they
    answered was in a leading assistant message that had to go."""
    messages = list(messages)
    while messages:
        first = messages[0]
        blocks = [b for b in first["content"] if b.get("type") != "tool_result"]
        if first["role"] == "user" and blocks:
            messages[0] = {"role": "user", "content": blocks}
            break
        messages.pop(0)
    return messages


def _exchanges(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    for m in messages:
        # A user message with new content starts an exchange, even when it also carries the
        # results of the previous answer's tool calls (a loop that ended at its limit): those
        # results are stripped if the exchange before it is dropped (see build_history).
        starts = m["role"] == "user" and any(b.get("type") != "tool_result" for b in m["content"])
        if starts or not groups:
            groups.append([m])
        else:
            groups[-1].append(m)
    return groups


def _size(messages: list[dict[str, Any]]) -> int:
    return len(jsoncodec.dumps(messages))


def build_history(
    stored: Sequence[Message], new_user: list[dict[str, Any]] | None, budget_tokens: int
) -> list[dict[str, Any]]:
    """Valid upstream `messages`: stored history (repaired, fitted) plus the new user turn."""
    raw = [{"role": m.role, "content": m.content} for m in stored]
    if new_user is not None:
        raw.append({"role": "user", "content": new_user})
    messages = _start_with_user(_merge_roles(_repair(raw)))
    groups = _exchanges(messages)
    kept: list[list[dict[str, Any]]] = []
    used = 2  # "[]"
    for group in reversed(groups):
        size = _size(group)
        if used + size > budget_tokens:
            break
        kept.append(group)
        used += size
    if not kept:
        raise InvalidRequest(
            "the new message does not fit the model's context window together with max_tokens",
            param="content",
        )
    # The oldest kept message may answer tool calls of a dropped exchange: strip those results.
    return _start_with_user([m for group in reversed(kept) for m in group])
