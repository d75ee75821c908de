"""Tool-loop overhead: what the gateway adds to a two-iteration turn with one instant webhook.

Run: .venv/bin/python bench/toolloop_bench.py [turns]      (default 200; writes
bench/results/toolloop.json)

Three processes on 127.0.0.1 (so the load generator never shares a GIL with what it measures):
the fake Anthropic upstream, scripted to answer tool_use then text, alternately; an instant
webhook receiver; and the gateway in local mode (SQLite on disk, local search indexing on, as
`make dev` runs it). Each sample is one non-streaming turn on a fresh thread:
client → gateway → upstream (tool_use) → webhook → upstream (text) → client.
Right after it, the benchmark makes the same three calls itself (equivalent upstream bodies, an
equivalent webhook body): "direct" time. Overhead = turn time − direct time of the same pair;
target ≤ 5 ms at p50 (issue 3). For scale, a one-call turn without tools is measured the same
way: what any turn costs (auth, thread lock, SQLite writes, reservation, indexing, HTTP), of
which the tool loop's overhead is the part above it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "threadgate" / "python"), str(ROOT)]

from bench._harness import MASTER, gateway, pct, serve_python, summary, write  # noqa: E402
from tests.fakes.fake_anthropic import FAKE_API_KEY  # noqa: E402

WARMUP = 20
TOOL = {"name": "instant", "description": "answers at once",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
MODEL = "claude-haiku-4-5"
UPSTREAM_HEADERS = {"x-api-key": FAKE_API_KEY, "anthropic-version": "2023-06-01"}


@contextlib.contextmanager
def scripted_upstream(samples: int) -> Iterator[str]:
    """Calls arrive one at a time, in the order of `sample()`: per sample a tool turn (tool_use,
    text), its direct twin (tool_use, text), a plain turn (text) and its direct twin (text)."""
    code = (
        "import uvicorn\n"
        "from tests.fakes.fake_anthropic import FakeAnthropic, FakeReply, FakeToolUse\n"
        "fake = FakeAnthropic()\n"
        "tool, text = FakeReply(tool_uses=[FakeToolUse('instant', {{'q': 'x'}})]), FakeReply(text='done')\n"
        f"for _ in range({samples}):\n"
        "    fake.enqueue(tool, text, tool, text, text, text)\n"
        "uvicorn.run(fake.app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n"
    )
    with serve_python(code) as url:
        yield url


@contextlib.contextmanager
def instant_receiver() -> Iterator[str]:
    code = (
        "import uvicorn\n"
        "from starlette.applications import Starlette\n"
        "from starlette.responses import JSONResponse\n"
        "from starlette.routing import Route\n"
        "async def tool(request):\n"
        "    await request.body()\n"
        "    return JSONResponse({{'output': 'ok', 'is_error': False}})\n"
        "app = Starlette(routes=[Route('/tool', tool, methods=['POST'])])\n"
        "uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n"
    )
    with serve_python(code) as url:
        yield url


def gateway_turn(gw: httpx.Client, tool_id: str | None) -> float:
    thread = gw.post("/v1/threads", json={}).json()["id"]
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "content": "use the tool"}
    if tool_id:
        body["tools"] = [tool_id]
    started = time.perf_counter()
    r = gw.post(f"/v1/threads/{thread}/messages", json=body)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.headers["x-qlaud-iterations"] == ("2" if tool_id else "1"), r.text
    return elapsed


def direct(up: httpx.Client, hook: httpx.Client | None, hook_url: str) -> float:
    """The same upstream (and webhook) work without the gateway: call, deliver, call again."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "use the tool"}]}]
    body: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": messages}
    if hook is not None:
        body["tools"] = [TOOL]
    started = time.perf_counter()
    answer = up.post("/v1/messages", json=body).json()
    if hook is not None:
        (use,) = [b for b in answer["content"] if b["type"] == "tool_use"]
        output = hook.post(hook_url, content=_delivery(use), headers={"content-type": "application/json"}).json()
        messages += [{"role": "assistant", "content": answer["content"]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                   "content": output["output"]}]}]
        answer = up.post("/v1/messages", json=body).json()
    elapsed = time.perf_counter() - started
    assert answer["stop_reason"] == "end_turn", answer
    return elapsed


def _delivery(use: dict[str, Any]) -> bytes:
    import json

    return json.dumps({"tool_id": "tool_" + "0" * 32, "tool_use_id": use["id"], "name": use["name"],
                       "input": use["input"], "thread_id": "thr_x", "end_user_id": None,
                       "request_id": "req_x"}).encode()


def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    total = turns + WARMUP
    samples: dict[str, list[float]] = {"tool_turn": [], "tool_direct": [], "plain_turn": [], "plain_direct": []}
    with scripted_upstream(total) as upstream, instant_receiver() as receiver, gateway(upstream) as gw_url:
        hook_url = receiver + "/tool"
        with httpx.Client(base_url=gw_url, headers={"x-api-key": MASTER}, timeout=30) as gw, \
                httpx.Client(base_url=upstream, headers=UPSTREAM_HEADERS, timeout=30) as up, \
                httpx.Client(timeout=30) as hook:
            r = gw.post("/v1/tools", json={**TOOL, "webhook_url": hook_url})
            assert r.status_code == 201, r.text
            tool_id = r.json()["id"]
            for i in range(total):
                # Each turn is paired with its direct twin right after it: drift hits both alike.
                sample = {
                    "tool_turn": gateway_turn(gw, tool_id),
                    "tool_direct": direct(up, hook, hook_url),
                    "plain_turn": gateway_turn(gw, None),
                    "plain_direct": direct(up, None, hook_url),
                }
                if i >= WARMUP:
                    for name, seconds in sample.items():
                        samples[name].append(seconds * 1000)
    tool_overhead = [t - d for t, d in zip(samples["tool_turn"], samples["tool_direct"])]
    plain_overhead = [t - d for t, d in zip(samples["plain_turn"], samples["plain_direct"])]
    result = {
        "scenario": "non-streaming thread turns on fresh threads, local mode (SQLite, local search indexing), "
                    "fake Anthropic + instant webhook on 127.0.0.1, each turn paired with the same calls made directly",
        "turns": turns,
        "two_iteration_tool_turn": summary(samples["tool_turn"]),
        "its_direct_upstream_and_webhook_time": summary(samples["tool_direct"]),
        "tool_loop_overhead": summary(tool_overhead),
        "baseline_one_call_turn_overhead": summary(plain_overhead),
        # What the loop adds on top of any turn: a second reserved/settled call, two more persisted
        # messages, one signed delivery.
        "loop_increment_p50_ms": round(pct(tool_overhead, 50) - pct(plain_overhead, 50), 3),
        "target_p50_ms": 5.0,
    }
    write("toolloop", result)


if __name__ == "__main__":
    main()
