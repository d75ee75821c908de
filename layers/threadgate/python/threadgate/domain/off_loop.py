"""Store calls that would block the event loop: in a worker thread only where that pays.

A network store (DynamoDB) keeps the loop waiting for a round trip: its calls go to a thread.
SQLite answers from local disk in tens of microseconds, less than the thread hop itself costs
(a handoff, two wake-ups and the GIL passing back and forth): its stores say `inline = True`
and are called on the loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

T = TypeVar("T")


async def off_loop(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, a store's bound method: on the loop when its store is `inline`,
    else in a thread."""
    if getattr(getattr(call, "__self__", None), "inline", False):
        return call(*args, **kwargs)
    return await asyncio.to_thread(call, *args, **kwargs)
