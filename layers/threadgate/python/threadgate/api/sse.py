"""Server-sent events: encoding, heartbeats, and turns that outlive their client.

A turn runs in its own task and writes events into a queue; the response only reads the queue.
A client that disconnects cancels the reader, never the turn, so the assistant message is still
persisted and the upstream usage still billed (API.md §6.2).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from threadgate import jsoncodec

DONE = _DONE = object()  # the end of a Feed
_background: set[asyncio.Task] = set()  # strong references: the loop only keeps weak ones


def encode(event: dict[str, Any], seq: int | None = None) -> bytes:
    """One SSE frame; `seq` (a run's event number) becomes its `id:` (Last-Event-ID resumes)."""
    frame = b"event: " + event["type"].encode() + b"\ndata: " + jsoncodec.dumps(event) + b"\n\n"
    return frame if seq is None else b"id: " + str(seq).encode() + b"\n" + frame


class Feed(asyncio.Queue):
    """A queue of a turn's events, filled by `task` (which no reader's departure cancels)."""

    task: asyncio.Task


def run_in_background(
    events: AsyncIterator[dict[str, Any]], on_finish: Callable[[], Awaitable[None]] | None = None
) -> Feed:
    """Drive `events` to completion in a task; items (or the raised exception) go to the queue."""
    queue = Feed()

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

    queue.task = spawn(drive())
    return queue


def spawn(coro: Any) -> asyncio.Task:
    """A task that outlives its request (held here until done; `wait_background` awaits it)."""
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def next_item(queue: asyncio.Queue) -> Any:
    """The next event, an exception, or None at the end."""
    item = await queue.get()
    return None if item is _DONE else item


async def drain(queue: asyncio.Queue) -> list[Any]:
    items = []
    while (item := await next_item(queue)) is not None:
        items.append(item)
    return items


END = {"type": "_end"}  # handed to a route's renderer once the turn is over


def native(event: dict[str, Any]) -> list[bytes]:
    """Our own SSE (API.md §6.2): every engine event as it is."""
    return [] if event is END else [encode(event)]


async def stream(
    first: dict[str, Any],
    queue: asyncio.Queue,
    ping_s: float,
    render: Callable[[dict[str, Any]], list[bytes]] = native,
) -> AsyncIterator[bytes]:
    """Wire bytes of a running turn: `render` maps each engine event (and END) to the route's
    frames; a `ping` goes out whenever nothing else did for `ping_s` seconds."""
    event: Any = first
    while True:
        if isinstance(event, dict):
            for frame in render(event):
                yield frame
        try:
            event = await asyncio.wait_for(queue.get(), timeout=ping_s)
        except asyncio.TimeoutError:
            event = {"type": "ping"}
            continue
        if event is _DONE:
            for frame in render(END):
                yield frame
            return


async def wait_background() -> None:
    """Let running turns finish (graceful shutdown)."""
    if _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
