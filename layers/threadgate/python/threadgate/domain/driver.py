"""The in-process driver: runs a run's steps in this process (local mode; text turns and the
inline tool loop on AWS), and the thread lease that keeps other turns off the thread meanwhile.

A turn holds its thread with a short lease renewed by a heartbeat while it runs here, so the lock
of a process that died is free again within one lease, and the next turn on the thread takes it
over and ends the dead turn (`steps.recover_dead_turn`). A turn finding its thread busy waits a
few seconds at most, then answers 409 with `Retry-After` (never minutes).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from threadgate.domain.errors import Conflict
from threadgate.domain.off_loop import off_loop
from threadgate.domain.run_events import EventSink
from threadgate.domain.runs import StepOutcome, ToolOutcome
from threadgate.domain.steps import (
    PendingToolCall,
    RunContext,
    RunDeps,
    abort,
    model_step,
    pending_tool_calls,
    tools_done,
)
from threadgate.ports import Clock, ThreadStore, ToolLoop

LOCK_POLL_S = 0.02
CANCEL_POLL_S = 0.5  # a cancel asked in another process is seen this fast during tool calls


class ThreadBusy(Conflict):
    """Another turn holds the thread (409 with Retry-After)."""

    def __init__(self, retry_after_s: int):
        super().__init__("another turn on this thread is still running; retry after the Retry-After seconds",
                         retry_after=retry_after_s)


class ThreadLease:
    """The thread's turn lock, held under the turn's run id and renewed every third of a lease."""

    def __init__(self, threads: ThreadStore, clock: Clock, thread_id: str, holder: str, lease_ms: int):
        self.threads, self.clock = threads, clock
        self.thread_id, self.holder, self.lease_ms = thread_id, holder, lease_ms
        self.taken_from: str | None = None  # the holder whose expired lease this one took over
        self.lost = False  # another turn took the thread: write nothing more
        self.handed_over = False  # a durable driver holds it now (under the same holder id)
        self.released = False  # the run's end released it (with its last writes)
        self._heartbeat: asyncio.Task | None = None

    async def acquire(self, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            acquired, previous = self.threads.take_turn_lock(
                self.thread_id, self.holder, self.clock.now_ms(), self.lease_ms)
            if acquired:
                self.taken_from = previous
                return
            if loop.time() >= deadline:
                # By then a dead holder's lease has run at least this much further.
                raise ThreadBusy(max(1, math.ceil(self.lease_ms / 3000)))
            await asyncio.sleep(LOCK_POLL_S)

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                renewed = await off_loop(self.threads.acquire_turn_lock, self.thread_id, self.holder,
                                         self.clock.now_ms(), self.lease_ms)
            except Exception:  # a failed renewal is retried at the next beat; the lease still runs
                continue
            if not renewed:
                self.lost = True
                return

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def release(self) -> None:
        self.stop()
        if not (self.handed_over or self.released):
            self.threads.release_turn_lock(self.thread_id, self.holder)
            self.released = True


async def drive(
    deps: RunDeps, ctx: RunContext, sink: EventSink, *, tool_loop: ToolLoop | None = None
) -> StepOutcome:
    """Run the run's steps until it ends, or until it is handed to `tool_loop` (a durable driver)
    after a model call asked for tools. A run resumed after its process died carries on from its
    last completed step: calls still without an outcome are delivered again (receivers dedupe on
    X-Qlaud-Delivery = tool_use_id)."""
    run_id = ctx.run.id
    ctx.cancel = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(_watch_cancel(deps, run_id, ctx.cancel))
    try:
        while True:
            step = await model_step(deps, run_id, sink, ctx)
            if step["next"] != "tools":
                return step
            if tool_loop is not None:
                await hand_over(deps, ctx, tool_loop, step)
                return step
            await deliver_tools(deps, ctx, pending_tool_calls(deps, ctx))
            await tools_done(deps, run_id, (), sink, ctx)
    except Exception as exc:  # a store failure between steps (model_step handles its own)
        return await abort(deps, ctx, sink, exc)
    finally:
        watcher.cancel()


async def _watch_cancel(deps: RunDeps, run_id: str, cancel: asyncio.Event) -> None:
    """A cancel asked through the store (any process) interrupts the model call in progress or
    the wait for tool calls; the run then ends `cancelled` at once."""
    while True:
        await asyncio.sleep(CANCEL_POLL_S)
        try:
            run: Any = await off_loop(deps.runs.get_run, run_id)
        except Exception:  # a failed look is not a cancel: look again next time
            continue
        if run is None or run.cancel_requested:
            cancel.set()
            return


async def hand_over(deps: RunDeps, ctx: RunContext, tool_loop: ToolLoop, step: StepOutcome) -> None:
    """The durable driver takes the run on: it holds the thread with the durable lease from now."""
    run = ctx.run
    if ctx.lease is not None:
        ctx.lease.handed_over = True  # the request's end must not release it
        ctx.lease.stop()
    deps.threads.acquire_turn_lock(run.thread_id, run.id, deps.clock.now_ms(), deps.durable_lease_ms)
    run.durable = True
    deps.runs.update_run(run.id, {"durable": True, "updated_at": deps.clock.now_ms()})
    await asyncio.to_thread(tool_loop.start, run.id, step["tool_calls"])


async def deliver_tools(deps: RunDeps, ctx: RunContext, calls: list[PendingToolCall]) -> None:
    """Deliver the calls concurrently and record each outcome (as the webhook worker does on
    AWS). A cancel of the run stops the wait: deliveries still running are abandoned, and their
    answers are ignored."""
    run_id = ctx.run.id

    async def deliver(call: PendingToolCall) -> None:
        if call.tool_id is None or deps.dispatch is None:
            result = ToolOutcome.unknown_tool(call.call.get("name"))
        else:
            try:
                result = ToolOutcome.of_delivery(
                    await deps.dispatch(call.account_id, call.tool_id, call.call, call.context))
            except Exception:  # a dispatcher bug must not break the thread
                result = ToolOutcome("tool dispatch failed", True, attempts=0)
        await off_loop(deps.runs.put_tool_outcome, run_id, call.call["id"], result)

    tasks = [asyncio.create_task(deliver(c)) for c in calls]
    if not tasks:
        return
    stop = ctx.cancel or asyncio.Event()
    stopper = asyncio.ensure_future(stop.wait())
    try:
        pending: set[asyncio.Task] = set(tasks)
        while pending and not stop.is_set():
            _, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
    finally:
        stopper.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:  # a store failure recording an outcome is the turn's failure
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
