"""Server-sent events: encoding, heartbeats, and turns that outlive their client.

A turn runs in its own task and writes events into a queue; the response only reads the queue.
A client that disconnects cancels the reader, never the turn, so the assistant message is still
persisted and the upstream usage still billed (API.md §6.2).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson

_DONE = object()
_background: set[asyncio.Task] = set()  # strong references: the loop only keeps weak ones


def encode(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def run_in_background(
    events: AsyncIterator[dict[str, Any]], on_finish: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Queue:
    """Drive `events` to completion in a task; items (or the raised exception) go to the queue."""
    queue: asyncio.Queue = asyncio.Queue()

    async def drive() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as exc:  # handed to the reader, which renders the error envelope
            queue.put_nowait(exc)
        finally:
            if on_finish is not None:
                await on_finish()
            queue.put_nowait(_DONE)

    task = asyncio.create_task(drive())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return queue


async def next_item(queue: asyncio.Queue) -> Any:
    """The next event, an exception, or None at the end."""
    item = await queue.get()
    return None if item is _DONE else item


async def drain(queue: asyncio.Queue) -> list[Any]:
    items = []
    while (item := await next_item(queue)) is not None:
        items.append(item)
    return items


async def stream(first: dict[str, Any], queue: asyncio.Queue, ping_s: float) -> AsyncIterator[bytes]:
    yield encode(first)
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), timeout=ping_s)
        except asyncio.TimeoutError:
            yield encode({"type": "ping"})
            continue
        if item is _DONE:
            return
        if isinstance(item, dict):
            yield encode(item)


async def wait_background() -> None:
    """Let running turns finish (graceful shutdown)."""
    if _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
