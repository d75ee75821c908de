"""The Anthropic Messages API provider, split by concern:

- `wire` — protocol constants and the shapes of messages, usage and stream events;
- `stream_accumulator` — `MessageAccumulator` / `accumulate()`: stream events → final message;
- `errors` — upstream status codes and bodies → `threadgate.domain.errors`;
- `client` — `AnthropicProvider`, on the shared `threadgate.providers.http` plumbing.

Import from the submodules; this file imports nothing so the pure parts stay cheap to load.
"""
