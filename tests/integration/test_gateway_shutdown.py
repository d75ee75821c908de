"""A stopped gateway closes its upstream connection pools (they die with the server's event loop:
left open, each is reported as "Unclosed client session" when collected)."""

from __future__ import annotations

import gc
from typing import Any

import aiohttp

from tests.conftest import start_gateway

MESSAGES_BODY = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def open_sessions() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed}


def test_a_stopped_gateway_leaves_no_upstream_session_open(tmp_path, fake_anthropic: Any) -> None:
    before, stack = open_sessions(), []
    gw = start_gateway(tmp_path, fake_anthropic, stack)
    with gw.admin() as c:
        assert c.post("/v1/messages", json=MESSAGES_BODY).status_code == 200
    assert open_sessions() - before  # the call went through a pooled session
    for server in reversed(stack):
        server.__exit__(None, None, None)
    assert open_sessions() - before == set()
