"""Model providers: adapters from the `ModelProvider` port to upstream LLM APIs.

Requests and answers are Anthropic Messages shaped dicts (our canonical form); providers with
another wire shape translate at their edge. This package's top level stays import-light (no
aiohttp) so that importing an error type does not pull a network stack into a cold start.

- `anthropic/` — the Anthropic Messages API over aiohttp, plus the stream accumulator.
- `openai/` — the OpenAI Chat Completions API, translated to and from the canonical form.
- `bedrock/` — Amazon Bedrock Converse/ConverseStream through boto3 (the function's IAM role).
- `http` — what both HTTP clients share: pooled client, retries before the first byte, SSE data.
- `errors` — what both share in mapping upstream failures to domain errors (redaction too).
- `local` — the offline deterministic model `threadgate-local`.
"""

from __future__ import annotations

from threadgate.domain.errors import UpstreamError


class UpstreamStreamBroken(UpstreamError):
    """A stream failed AFTER at least one event was handed to the caller.

    Nothing is retried at that point: the caller has already forwarded (and must bill) what it
    received, so it accounts for the partial answer itself (see `MessageAccumulator`).
    """

    def __init__(self, message: str, *, events_received: int = 0):
        super().__init__(message)
        self.events_received = events_received


__all__ = ["UpstreamStreamBroken"]
