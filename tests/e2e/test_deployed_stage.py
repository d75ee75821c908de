"""Against a deployed stage (skipped unless THREADGATE_BASE_URL and THREADGATE_ADMIN_KEY are set):
the tutorial's six steps, then a streamed turn whose events must arrive spread over time — the
proof that API Gateway + Lambda Web Adapter stream rather than buffer."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from examples import tutorial

BASE_URL = os.environ.get("THREADGATE_BASE_URL")
ADMIN_KEY = os.environ.get("THREADGATE_ADMIN_KEY")
pytestmark = pytest.mark.skipif(not (BASE_URL and ADMIN_KEY), reason="no deployed stage (THREADGATE_BASE_URL)")


def test_the_tutorial_runs_against_the_stage():
    assert tutorial.main(["--base-url", BASE_URL, "--master-key", ADMIN_KEY]) == 0


def test_a_streamed_turn_arrives_incrementally():
    with httpx.Client(base_url=BASE_URL, headers={"x-api-key": ADMIN_KEY}, timeout=120) as c:
        thread = c.post("/v1/threads", json={}).raise_for_status().json()["id"]
        arrivals = []
        body = {"model": "threadgate-local", "max_tokens": 40, "stream": True,
                "content": " ".join(f"word{i}" for i in range(40))}
        with c.stream("POST", f"/v1/threads/{thread}/messages", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("event: content_block_delta"):
                    arrivals.append(time.monotonic())
        c.delete(f"/v1/threads/{thread}")
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] > 0.2  # the local model paces words; a buffered body lands at once
