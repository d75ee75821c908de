"""Smoke test of AnthropicProvider against `claude-local` (the `localstack-claude` emulator of
the Anthropic API, an implementation independent of our fake). Skipped when it is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threadgate.providers.anthropic.client import AnthropicProvider
from threadgate.providers.anthropic.stream_accumulator import accumulate

pytestmark = pytest.mark.anyio

REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello."}],
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _executable() -> str | None:
    beside_python = Path(sys.executable).parent / "claude-local"
    return str(beside_python) if beside_python.exists() else shutil.which("claude-local")


@pytest.fixture(scope="module")
def emulator_url():
    executable = _executable()
    if executable is None:
        pytest.skip("localstack-claude is not installed (pip install localstack-claude)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CLAUDE_HOST": "127.0.0.1", "CLAUDE_PORT": str(port)}
    process = subprocess.Popen([executable], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("claude-local did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def provider(emulator_url):
    provider = AnthropicProvider(emulator_url, "test-key", timeout_s=10, attempts=1)
    yield provider
    await provider.aclose()


async def test_create_against_the_emulator(provider):
    message = await provider.create(REQUEST)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["type"] == "text" and message["content"][0]["text"]
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


async def test_stream_against_the_emulator_accumulates_to_a_message(provider):
    events = [event async for event in provider.stream(REQUEST)]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    message = accumulate(events)
    assert message["content"][0]["text"]
    assert message["stop_reason"] in {"end_turn", "max_tokens"}
