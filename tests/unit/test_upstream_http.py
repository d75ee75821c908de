"""The upstream HTTP plumbing (providers/http.py): the SSE parser (what a provider reads from a
stream however the network cuts it into chunks) and the proxy the environment names."""

from __future__ import annotations

import asyncio

import pytest

from threadgate.providers.http import env_proxy, sse_data

STREAM = (
    b"\xef\xbb\xbfevent: message_start\r\n"
    b"data: {\"type\": \"message_start\"}\r\n"
    b"\r\n"
    b": a comment, then a ping the upstream sends to keep the connection open\n"
    b"\n"
    b"event: content_block_delta\r"
    b"data:{\"text\": \"two\r"
    b"data: lines\"}\r"
    b"\r"
    b"data: [DONE]\n"
    b"\n"
    b"data: never finished"
)
EXPECTED = ['{"type": "message_start"}', '{"text": "two\nlines"}', "[DONE]"]


def parse(chunks: list[bytes]) -> list[str]:
    async def feed():
        for chunk in chunks:
            yield chunk

    async def collect() -> list[str]:
        return [data async for data in sse_data(feed())]

    return asyncio.run(collect())


def test_a_stream_in_one_chunk_gives_each_events_data():
    assert parse([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_the_same_data_however_the_stream_is_cut(size):
    # Cuts fall between CR and LF, inside field names and inside multi-byte characters.
    assert parse([STREAM[i:i + size] for i in range(0, len(STREAM), size)]) == EXPECTED


def test_utf8_split_across_chunks_and_an_event_without_data():
    body = "event: ping\n\ndata: héllo ✓\n\n".encode()
    cut = body.index("✓".encode()) + 1
    assert parse([body[:cut], body[cut:]]) == ["", "héllo ✓"]


def test_the_proxy_variables_are_honoured_unless_no_proxy_covers_the_host(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.anthropic.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.svc.internal")
    assert env_proxy("https://api.anthropic.com") == "http://egress.internal:3128"
    assert env_proxy("https://models.svc.internal/v1") is None
    assert env_proxy("http://api.openai.com/v1") is None  # only HTTPS_PROXY is set
