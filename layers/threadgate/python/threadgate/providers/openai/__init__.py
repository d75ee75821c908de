"""The OpenAI Chat Completions provider and the Anthropic ⇄ OpenAI translation, split by concern:

- `wire` — protocol constants and the small value mappings (stop reasons, usage, tool arguments);
- `translate` — pure request/answer translation both ways, re-exporting the stream translators;
- `streams` — `OpenAIStreamTranslator` (chunks → Anthropic events) and `AnthropicToOpenAIStream`;
- `errors` — upstream statuses, stream error payloads and transport failures → domain errors;
- `client` — `OpenAIProvider`, the httpx adapter with retries before the first byte.

Import from the submodules; this file imports nothing so the pure parts stay cheap to load.
"""
