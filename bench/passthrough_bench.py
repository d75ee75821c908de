"""Passthrough overhead (API.md §10), as a difference against a direct call to the same fake
upstream in the same run:
- added latency of a non-streaming call at concurrency 1, p50/p99, for the four routes a caller
  can take: /v1/messages to Claude and /v1/chat/completions to GPT (same family, forwarded whole),
  /v1/chat/completions to Claude and /v1/messages to GPT (translated both ways), and
  /v1/responses to GPT (the Responses API, forwarded whole);
- added time to first token of the streamed call (first content delta), p50/p99.
Every request carries a 20-message history and a 64-token limit; direct calls send the same
history in the upstream's own shape.
Run: `.venv/bin/python bench/passthrough_bench.py` (also part of `make bench`). Writes
bench/results/passthrough.json.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import MASTER, compared, fake_openai_upstream, fake_upstream, gateway, write  # noqa: E402
from tests.fakes.fake_anthropic import FAKE_API_KEY as ANTHROPIC_KEY  # noqa: E402
from tests.fakes.fake_openai import FAKE_API_KEY as OPENAI_KEY  # noqa: E402

CLAUDE, GPT = "claude-haiku-4-5", "gpt-5.4-nano"
N = 200
HISTORY = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "words " * 30} for i in range(20)]
HISTORY.append({"role": "user", "content": "one more question"})
# The first content delta of any wire (an Anthropic text_delta, a Chat Completions chunk with text,
# a Responses output_text delta).
FIRST_CONTENT = re.compile(r'"text_delta"|"content": ?"[^"]|output_text\.delta')
PATHS = {"messages": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}


def bodies(shape: str, model: str, stream: bool) -> dict[str, Any]:
    if shape == "messages":
        return {"model": model, "max_tokens": 64, "stream": stream, "messages": HISTORY}
    if shape == "responses":
        return {"model": model, "max_output_tokens": 64, "stream": stream, "input": HISTORY}
    return {"model": model, "max_completion_tokens": 64, "stream": stream, "messages": HISTORY}


async def call(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]) -> float:
    """Milliseconds to the whole answer, or (streaming) to the first content delta; a stream is
    read to its end either way."""
    start = time.perf_counter()
    if not body["stream"]:
        r = await client.post(url, headers=headers, json=body)
        r.raise_for_status()
        return (time.perf_counter() - start) * 1000
    first = None
    async with client.stream("POST", url, headers=headers, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if first is None and FIRST_CONTENT.search(line):
                first = (time.perf_counter() - start) * 1000
    if first is None:
        raise RuntimeError(f"no content delta from {url}")
    return first


async def main() -> None:
    with fake_upstream() as claude_up, fake_openai_upstream() as gpt_up, gateway(
        claude_up, OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=gpt_up + "/v1"
    ) as gw:
        async with httpx.AsyncClient(timeout=60) as client:
            key = (await client.post(gw + "/v1/keys", headers={"x-api-key": MASTER},
                                     json={"name": "bench", "max_spend_usd": 1000})).json()["secret"]
            ours = {"x-api-key": key}
            direct = {
                "messages": (claude_up + "/v1/messages", {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}),
                "chat": (gpt_up + "/v1/chat/completions", {"authorization": f"Bearer {OPENAI_KEY}"}),
                "responses": (gpt_up + "/v1/responses", {"authorization": f"Bearer {OPENAI_KEY}"}),
            }
            routes = {  # name: (gateway path shape, model, the upstream the model lives on)
                "messages_to_claude": ("messages", CLAUDE, "messages"),
                "chat_to_gpt": ("chat", GPT, "chat"),
                "chat_to_claude": ("chat", CLAUDE, "messages"),
                "messages_to_gpt": ("messages", GPT, "chat"),
                "responses_to_gpt": ("responses", GPT, "responses"),
            }
            results: dict[str, Any] = {}
            for name, (shape, model, upstream) in routes.items():
                path = PATHS[shape]
                up_url, up_headers = direct[upstream]
                for stream in (False, True):
                    direct_ms, gateway_ms = [], []
                    for _ in range(N):  # interleaved, so drift hits both equally
                        direct_ms.append(await call(client, up_url, up_headers, bodies(upstream, model, stream)))
                        gateway_ms.append(await call(client, gw + path, ours, bodies(shape, model, stream)))
                    results[f"{name}_{'ttft' if stream else 'c1'}"] = compared(direct_ms, gateway_ms)
    results["method"] = ("gateway and both fake upstreams in separate processes on 127.0.0.1; concurrency 1; "
                         "direct = the same 20-message history straight to the upstream the model lives on, in its "
                         "own shape; added = gateway percentile minus direct percentile in the same run")
    write("passthrough", results)


if __name__ == "__main__":
    asyncio.run(main())
