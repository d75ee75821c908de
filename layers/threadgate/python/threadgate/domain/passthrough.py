"""One metered model call with nothing persisted: `/v1/messages`, `/v1/chat/completions`,
`/v1/responses` and their async jobs (API.md §10, §11).

reserve → call → settle, exactly once. The body reaches the upstream in the upstream's own wire
shape (translated beforehand by the API layer when the caller speaks the other family); the only
thing this engine changes is the output limit: it reserves against the caller's limit, or against
the model's real output limit from the catalog when the caller set none (a limit is never
invented), and lowers it to what the key can still pay for. Usage and cost are read from the
upstream's own answer.

`events()` yields the upstream's events as they are (streaming), then a `qlaud.error` event if
the call failed after it began, and always `qlaud.done` last (as a thread turn's events end);
errors before the call (402) raise. The HTTP layer renders the
events in the caller's shape (api/passthrough.py); `result.message` is the whole answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar, Protocol

from threadgate.domain import billing, model_rules
from threadgate.domain.errors import GatewayError, KeyCapExceeded, UpstreamError
from threadgate.domain.metering import Meter
from threadgate.domain.models import ModelInfo, Principal, Usage


class Tally(Protocol):
    """Reads one streamed answer as its events pass (an adapter per wire shape)."""

    started: bool  # at least one event arrived
    deltas: int  # content deltas seen: a broken stream bills at least one token per delta

    def feed(self, event: dict[str, Any]) -> None: ...
    def message(self) -> dict[str, Any]:
        """The answer as received so far, in the wire's whole-answer shape, with its usage."""


class Upstream(Protocol):
    """A model reached in one wire shape (`wire`: "anthropic", "openai" or "responses"), body as it is."""

    wire: str

    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...
    def tally(self) -> Tally: ...
    def usage_of(self, answer: dict[str, Any]) -> Usage: ...
    def failed(self, answer: dict[str, Any]) -> bool:
        """The whole answer says the upstream gave up (a Responses `response.failed`): it is
        billed for the usage it reports, and recorded as a call that failed after it began."""


@dataclass
class PassthroughSpec:
    principal: Principal
    model: ModelInfo
    request_id: str
    stream: bool
    body: dict[str, Any]  # the upstream request, model id already the upstream's
    messages: list[Any]  # the conversation in `body` (its images and documents bound the input)
    max_tokens: int | None  # the caller's output limit; None: absent
    limit_fields: tuple[str, ...] = ("max_tokens",)  # where the limit goes in `body`
    limit_required: bool = True  # the wire needs a limit (Messages) even when the caller set none
    choices: int = 1  # answers per request (Chat Completions `n`): each may use the whole limit
    extra_output_tokens: int = 0  # output billed beyond the limit (rejected predicted-output tokens)
    min_limit: int = 1  # the smallest output limit the upstream takes (Responses API: 16)
    thread: ClassVar[None] = None  # runners read it: a passthrough call holds no thread lock


@dataclass
class PassthroughResult:
    message: dict[str, Any] | None = None  # the whole answer, in the upstream's wire shape
    cost_micros: int = 0
    usage: Usage = field(default_factory=Usage)
    error: GatewayError | None = None


class PassthroughCall:
    def __init__(self, meter: Meter, spec: PassthroughSpec, upstream: Upstream):
        self.meter = meter
        self.spec = spec
        self.upstream = upstream
        self.result = PassthroughResult()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Reserve, call, and settle exactly once (also when the stream breaks or the task is
        cancelled: a client that left, a cancelled job) from what the upstream reported."""
        spec, meter, result = self.spec, self.meter, self.result
        reservation, body = self._reserve()  # 402 raises here, before anything was sent
        tally = self.upstream.tally()
        answer: dict[str, Any] | None = None
        started = time.monotonic()
        try:
            if spec.stream:
                async for event in self.upstream.stream(body):
                    tally.feed(event)
                    yield event
                answer = tally.message()
            else:
                answer = await self.upstream.create(body)
        except GatewayError as err:
            result.error = err
        finally:
            if answer is None and not tally.started:
                meter.release(reservation)  # the upstream served nothing billable
            else:
                usage = self.upstream.usage_of(answer if answer is not None else tally.message())
                if answer is None and usage.output_tokens == 0:
                    usage.output_tokens = max(1, tally.deltas)  # a broken stream cost what we saw
                event = meter.settle(
                    reservation, spec.model, usage,
                    latency_ms=int((time.monotonic() - started) * 1000),
                    status="ok" if answer is not None and not self.upstream.failed(answer) else "incomplete",
                )
                result.cost_micros, result.usage = event.cost_micros, usage
        result.message = answer
        if answer is None:
            err = result.error or UpstreamError("the model call failed")
            yield {"type": "qlaud.error", "error": {"type": err.type, "message": err.message}, "iteration": 1}
        yield {"type": "qlaud.done", "cost_micros": result.cost_micros, "usage": result.usage.as_dict()}

    def _reserve(self) -> tuple[Any, dict[str, Any]]:
        """The reservation, and the body with the output limit it covers."""
        spec = self.spec
        requested = spec.max_tokens or spec.model.max_output_tokens
        bound = billing.call_bound(spec.model, spec.body)
        model_rules.admit(spec.model, spec.body, bound, requested)  # 400s before any money moves
        reservation, covered = self.meter.reserve(
            spec.principal,
            spec.model,
            input_bound=bound,
            max_tokens=requested * spec.choices + spec.extra_output_tokens,
            request_id=spec.request_id,
            reservation_id=f"{spec.request_id}:1",
            thread_id=None,
        )
        limit = min(requested, (covered - spec.extra_output_tokens) // spec.choices)
        # Lowered below what the upstream takes: the key cannot pay for the smallest answer (a
        # limit the caller chose itself goes up as it came, for the upstream to judge).
        if limit < 1 or (limit < requested and limit < spec.min_limit):
            self.meter.release(reservation)
            raise KeyCapExceeded("the remaining budget cannot cover this request")
        body = spec.body
        if spec.max_tokens is not None or limit < requested or spec.limit_required:
            body = {**body, **{name: limit for name in spec.limit_fields}}
        return reservation, body
