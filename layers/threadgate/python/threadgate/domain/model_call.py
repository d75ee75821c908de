"""One metered upstream call of a thread turn (`domain.steps`, one per iteration): reserved
before, settled exactly once after, whatever happens. (Passthrough has its own engine,
`domain.passthrough`, which forwards bodies in the upstream's wire shape.)

The caller reserves (a 402 must come before any write);
`ModelCall.events()` makes the call, yields the upstream's stream events, and prices the
settlement in its `finally` — also when the stream breaks or the task is cancelled (a client
that left, a cancelled job) — from what the upstream actually reported. `close()` writes it (or
releases the reservation of a call that served nothing): the step calls it in one unit with the
answer it keeps (`Stores.atomic`), and in its own `finally` whatever happens, so the call is
settled exactly once.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any, AsyncIterator, Callable

from threadgate.domain.errors import GatewayError
from threadgate.domain.metering import Meter
from threadgate.domain.models import ModelInfo, Reservation, Usage
from threadgate.ports import ModelProvider
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator


class ModelCall:
    def __init__(
        self,
        meter: Meter,
        provider: ModelProvider,
        model: ModelInfo,
        reservation: Reservation,
        request: dict[str, Any],
        *,
        stream: bool,
    ):
        self.meter, self.provider, self.model = meter, provider, model
        self.reservation, self.request, self.stream = reservation, request, stream
        self.message: dict[str, Any] | None = None  # the whole answer (None: the call failed)
        self.partial: dict[str, Any] | None = None  # what a broken stream said (text and thinking only)
        self.error: GatewayError | None = None
        self.usage = Usage()
        self.cost_micros = 0
        self.billed = False  # settled: the upstream served (part of) it
        # What close() writes: a call that never ran (cancelled before it began) holds nothing.
        self._closing: Callable[[], Any] = partial(meter.release, reservation)
        self._closed = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The upstream's Anthropic stream events (none for a non-streaming call)."""
        request, acc = dict(self.request), MessageAccumulator()
        started = time.monotonic()
        status, deltas = "error", 0
        message: dict[str, Any] | None = None
        try:
            if self.stream:
                request["stream"] = True
                async for event in self.provider.stream(request):
                    acc.feed(event)
                    deltas += event.get("type") == "content_block_delta"
                    if event.get("type") == "message_start":
                        event = _with_model(event, self.model.id)
                    yield event
                message = acc.message()
            else:
                message = await self.provider.create(request)
            message["model"] = self.model.id
            status = "ok"
        except GatewayError as err:
            self.error = err
        except asyncio.CancelledError:
            status = "incomplete"
            raise
        finally:
            usage = Usage.from_anthropic(message["usage"] if message else acc.usage)
            if status != "ok" and acc.started and usage.output_tokens == 0:
                # A broken stream still cost the tokens we saw: at least one per delta.
                usage.output_tokens = max(1, deltas)
            if message is None and not acc.started:
                self._closing = partial(self.meter.release, self.reservation)  # served nothing billable
            else:
                self.billed = True
                event = self.meter.priced(
                    self.reservation, self.model, usage,
                    latency_ms=int((time.monotonic() - started) * 1000),
                    status="ok" if status == "ok" else "incomplete",
                )
                self._closing = partial(self.meter.ledger.settle, self.reservation.id, event)
                self.cost_micros, self.usage = event.cost_micros, usage
            if message is None and acc.started:
                # Keep what was said, minus unfinished tool calls, so a thread stays valid.
                said = acc.message()
                said["content"] = [b for b in said["content"] if b.get("type") in ("text", "thinking")]
                self.partial = said if said["content"] else None
        self.message = message

    def close(self, *, again: bool = False) -> None:
        """Settle the call (release it if it served nothing) unless done already; `again`: even
        then (a unit of work that rolled back may have taken the write with it; the ledger
        settles a reservation once). Once the stream has ended: what it reported is in."""
        if again or not self._closed:
            self._closing()
            self._closed = True


def _with_model(event: dict[str, Any], model_id: str) -> dict[str, Any]:
    message = dict(event.get("message") or {})
    message["model"] = model_id
    return {**event, "message": message}


def usage_seen(events: list[dict[str, Any]]) -> Usage | None:
    """What a call's recorded stream events show it used (None: it never started): the input
    from `message_start`, the output from the last `message_delta` usage, at least one token per
    text delta seen. Settles a call whose process died mid-stream."""
    acc, deltas = MessageAccumulator(), 0
    for event in events:
        acc.feed(event)
        deltas += event.get("type") == "content_block_delta"
    if not acc.started:
        return None
    usage = Usage.from_anthropic(acc.usage)
    usage.output_tokens = max(usage.output_tokens, deltas, 1)
    return usage
