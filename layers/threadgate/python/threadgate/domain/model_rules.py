"""Per-model parameter rules, checked before any upstream call (no money spent, no tool loop
left half done). The catalog says what each model refuses (`ModelInfo.rules`); a request that
sends it gets a 400 naming the parameter instead of a confusing upstream error mid-loop.

Works on either request shape: the rules' parameters have the same names in Anthropic Messages
and OpenAI Chat Completions (`temperature`, `top_p`, `tool_choice`) or exist in one only
(`top_k`, `thinking`).
"""

from __future__ import annotations

from typing import Any

from threadgate.domain.billing import CallBound, context_overflow
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import ModelInfo

# The sampling defaults a "default sampling only" model still accepts when sent explicitly.
_SAMPLING_DEFAULTS: dict[str, float | None] = {"temperature": 1.0, "top_p": 1.0, "top_k": None}


def _forced(tool_choice: Any) -> bool:
    """Anthropic {"type": "any"|"tool"}; OpenAI "required" or {"type": "function", ...}."""
    return tool_choice == "required" or (
        isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool", "function")
    )


def check_parameters(model: ModelInfo, request: dict[str, Any]) -> None:
    """400 naming the first parameter `model` refuses; None when the request is acceptable."""
    rules = model.rules
    if rules.default_sampling_only:
        for name, default in _SAMPLING_DEFAULTS.items():
            value = request.get(name)
            if value is not None and value != default:
                allowed = f"only its default ({default})" if default is not None else "no value"
                raise InvalidRequest(
                    f"{name}: {model.id} accepts {allowed} for {name}; leave it out", param=name
                )
    thinking = request.get("thinking")
    if not rules.manual_thinking and isinstance(thinking, dict) and thinking.get("type") == "enabled":
        raise InvalidRequest(
            f"thinking: {model.id} does not accept manual extended thinking (type 'enabled' with "
            "budget_tokens); use {\"type\": \"adaptive\"} or leave it out",
            param="thinking",
        )
    if not rules.forced_tool_choice and _forced(request.get("tool_choice")):
        raise InvalidRequest(
            f"tool_choice: {model.id} does not support forcing a tool call; use 'auto' or 'none'",
            param="tool_choice",
        )


def admit(model: ModelInfo, request: dict[str, Any], bound: CallBound, max_tokens: int) -> None:
    """Everything a request must pass before it may reserve money or reach an upstream: the
    model's parameter rules and, for a request sent as it is (passthrough), its context window."""
    check_parameters(model, request)
    overflow = context_overflow(model, bound, max_tokens)
    if overflow is not None:
        raise InvalidRequest(overflow, param="max_tokens" if overflow.startswith("max_tokens") else "messages")
