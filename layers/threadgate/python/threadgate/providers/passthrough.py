"""Providers as passthrough upstreams (`domain.passthrough.Upstream`).

An OpenAI provider is reached in its own Chat Completions shape (answering a Messages caller in the
Messages shape), or in the Responses shape for a Responses caller; every other provider through the canonical Anthropic Messages shape of the
`ModelProvider` port (Anthropic forwards that body as it is; the local model and Bedrock translate
it at their edge).
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from threadgate.domain.models import Usage
from threadgate.ports import ModelProvider
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator
from threadgate.providers.openai import responses
from threadgate.providers.openai.streams import ChunkAccumulator
from threadgate.providers.openai.wire import usage_to_anthropic


class MessagesWire:
    """A provider of the canonical shape: takes a Messages body, answers in the Messages shape."""

    wire = "anthropic"

    def __init__(self, provider: ModelProvider):
        self._provider = provider

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._provider.create(body)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._provider.stream(body)

    @staticmethod
    def tally() -> MessageAccumulator:
        return MessageAccumulator()

    @staticmethod
    def usage_of(answer: dict[str, Any]) -> Usage:
        return Usage.from_anthropic(answer.get("usage"))

    @staticmethod
    def failed(answer: dict[str, Any]) -> bool:
        return False  # a failed Messages call is an HTTP error or an `error` event: both raise


class ChatAsMessagesWire(MessagesWire):
    """An OpenAI provider for a Messages caller: takes the translated Chat Completions body,
    answers in the Messages shape."""

    wire = "openai"

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._provider.create_from_chat(body)  # type: ignore[attr-defined]

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._provider.stream_from_chat(body)  # type: ignore[attr-defined]


class ChatCompletionsWire:
    """An OpenAI provider for a Chat Completions caller: body and answer as they are."""

    wire = "openai"

    def __init__(self, provider: Any):  # an OpenAIProvider
        self._provider = provider

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._provider.forward(body)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._provider.forward_stream(body)

    @staticmethod
    def tally() -> ChunkAccumulator:
        return ChunkAccumulator()

    @staticmethod
    def usage_of(answer: dict[str, Any]) -> Usage:
        # The tier OpenAI reports it served the call at prices it (domain/billing.py).
        return Usage.from_anthropic(usage_to_anthropic(answer.get("usage"), answer.get("service_tier")))

    failed = staticmethod(MessagesWire.failed)  # a failed chat completion is an HTTP error or an `error` chunk


class ResponsesWire:
    """An OpenAI provider for a Responses API caller: body and answer as they are."""

    wire = "responses"

    def __init__(self, provider: Any):  # an OpenAIProvider
        self._provider = provider

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._provider.respond(body)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._provider.respond_stream(body)

    @staticmethod
    def tally() -> responses.ResponsesTally:
        return responses.ResponsesTally()

    usage_of = staticmethod(responses.usage_of)
    failed = staticmethod(responses.failed)


def upstream_of(provider: ModelProvider, caller: str) -> MessagesWire | ChatCompletionsWire | ResponsesWire:
    """`provider` as seen by a caller speaking `caller` ("openai", "anthropic" or "responses").
    Its `wire` is the request shape it takes: when that is not the caller's, translate the
    request first (the Responses API is not translated: api/passthrough.py refuses it)."""
    if not hasattr(provider, "forward_stream"):
        return MessagesWire(provider)
    if caller == "responses":
        return ResponsesWire(provider)
    return ChatCompletionsWire(provider) if caller == "openai" else ChatAsMessagesWire(provider)
