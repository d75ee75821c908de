"""Core gateway overhead, measured as a difference against a direct call to the same fake upstream
in the same run (DESIGN "Tests and benchmarks"):

- added latency of a non-streaming thread turn (auth + reservation + 20-message history +
  persistence + settlement + usage event) at 1 and 32 concurrent clients, p50/p99;
- added time-to-first-token of a streaming turn (first content_block_delta), p50/p99;
- sustained turns per second with the fake upstream.

Run: `make bench` (or `.venv/bin/python bench/core_bench.py`). Writes bench/results/core.json.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import MASTER, compared, fake_upstream, gateway, write  # noqa: E402
from tests.fakes.fake_anthropic import FAKE_API_KEY  # noqa: E402

MODEL = "claude-haiku-4-5"
N_SERIAL = 300
N_CONCURRENT = 640


async def timed(coro) -> float:
    start = time.perf_counter()
    await coro
    return (time.perf_counter() - start) * 1000


async def direct_call(client: httpx.AsyncClient, upstream: str, messages: list) -> None:
    r = await client.post(upstream + "/v1/messages", headers={"x-api-key": FAKE_API_KEY, "anthropic-version": "2023-06-01"},
                          json={"model": MODEL, "max_tokens": 64, "messages": messages})
    r.raise_for_status()


async def turn(client: httpx.AsyncClient, gw: str, key: str, thread: str) -> None:
    r = await client.post(f"{gw}/v1/threads/{thread}/messages", headers={"x-api-key": key},
                          json={"model": MODEL, "max_tokens": 64, "content": "one more question"})
    r.raise_for_status()


async def first_token(client: httpx.AsyncClient, url: str, headers: dict, body: dict) -> float:
    start = time.perf_counter()
    ttft = None
    async with client.stream("POST", url, headers=headers, json=body) as r:
        async for line in r.aiter_lines():  # read to the end: the turn must complete
            if ttft is None and line.startswith("event: content_block_delta"):
                ttft = (time.perf_counter() - start) * 1000
    if ttft is None:
        raise RuntimeError("no delta")
    return ttft


async def run_level(n: int, concurrency: int, make) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    out: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            out.append(await make(i))

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def main() -> None:
    with fake_upstream() as upstream, gateway(upstream) as gw:
        # Expire idle connections before uvicorn does (5 s), or a reused one may be closed under us.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=3)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            admin = {"x-api-key": MASTER}
            key = (await client.post(gw + "/v1/keys", headers=admin, json={"name": "bench", "max_spend_usd": 1000})).json()["secret"]
            threads = []
            for _ in range(32):
                t = (await client.post(gw + "/v1/threads", headers={"x-api-key": key}, json={})).json()["id"]
                for _ in range(10):  # 20 messages of history
                    await turn(client, gw, key, t)
                threads.append(t)
            history = (await client.get(f"{gw}/v1/threads/{threads[0]}/messages", headers={"x-api-key": key})).json()["data"]
            messages = [{"role": m["role"], "content": m["content"]} for m in history] + [
                {"role": "user", "content": "one more question"}]

            results = {}
            for conc in (1, 32):
                n = N_SERIAL if conc == 1 else N_CONCURRENT
                # Interleave the two so drift (thermal, GC, page cache) hits both equally.
                direct, gateway_ms = [], []
                for _ in range(2):
                    direct += await run_level(n // 2, conc, lambda i: timed(direct_call(client, upstream, messages)))
                    gateway_ms += await run_level(
                        n // 2, conc, lambda i: timed(turn(client, gw, key, threads[i % len(threads)])))
                results[f"turn_c{conc}"] = compared(direct, gateway_ms)

            stream_body = {"model": MODEL, "max_tokens": 64, "stream": True,
                           "messages": [{"role": "user", "content": "stream please"}]}
            direct_ttft, gw_ttft = [], []
            for i in range(N_SERIAL):
                direct_ttft.append(await first_token(client, upstream + "/v1/messages",
                                                     {"x-api-key": FAKE_API_KEY}, stream_body))
                gw_ttft.append(await first_token(
                    client, f"{gw}/v1/threads/{threads[i % len(threads)]}/messages", {"x-api-key": key},
                    {"model": MODEL, "max_tokens": 64, "stream": True, "content": "stream please"}))
            results["ttft_stream_c1"] = compared(direct_ttft, gw_ttft)

            start = time.perf_counter()
            done = await run_level(N_CONCURRENT, 32, lambda i: timed(turn(client, gw, key, threads[i % 32])))
            elapsed = time.perf_counter() - start
            results["sustained"] = {"turns": len(done), "seconds": round(elapsed, 2),
                                    "turns_per_s": round(len(done) / elapsed, 1), "concurrency": 32}
    results["method"] = ("gateway and fake upstream in separate processes on 127.0.0.1; load from a third; "
                         "direct = same request body (20-message history) straight to the fake; "
                         "added = gateway percentile minus direct percentile in the same run")
    write("core", results)


if __name__ == "__main__":
    asyncio.run(main())
