"""The OpenAI Chat Completions provider and the Anthropic ⇄ OpenAI translation, split by concern:

- `wire` — protocol constants and the small value mappings (stop reasons, usage, tool arguments);
- `translate` — pure request/answer translation both ways, re-exporting the stream translators;
- `streams` — `OpenAIStreamTranslator` (chunks → Anthropic events) and `AnthropicToOpenAIStream`;
- `errors` — upstream statuses and stream error payloads → domain errors (shared parts in
  `threadgate.providers.errors`);
- `client` — `OpenAIProvider`, on the shared `threadgate.providers.http` plumbing.

Import from the submodules; this file imports nothing so the pure parts stay cheap to load.
"""
